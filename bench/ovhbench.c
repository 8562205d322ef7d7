// ovhbench: the C-speed workloads of bench/overhead.py, one per kind of hook.
// Built with cc into a temporary directory at bench time. Each mode runs a
// setup, then N operations timed with CLOCK_MONOTONIC, and prints the elapsed
// nanoseconds of the timed loop only (no process start-up, no setup).
//
//   ovhbench syscall N            getppid() N times (raw_syscalls enter + exit)
//   ovhbench pipe N               N ping-pong round trips between two processes
//                                 over two pipes (context switches, wake-ups)
//   ovhbench ring N K             N hops of a token around a ring of K processes
//                                 over K pipes (K processes switching on one CPU)
//   ovhbench fault N              N anonymous pages touched (N page faults), in
//                                 mmap/touch/munmap chunks of 64 pages
//   ovhbench fork N               N × fork, exit, wait
//   ovhbench exec N               N × fork, exec of this binary ("noop"), exit, wait
//   ovhbench block N DEVICE       N O_DIRECT 4 KiB reads at pseudo-random offsets
//   ovhbench tcp N PORT           N one-byte ping-pong round trips over loopback
//                                 TCP with TCP_NODELAY (server on 127.0.0.1:PORT)
//
// The binary is named ovhbench so the benchmark's counting program can tell its
// events from everyone else's by comm (children keep the name; exec of itself too).
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what) {
    perror(what);
    exit(1);
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void full_read(int fd, char *buf, size_t len) {
    size_t got = 0;
    while (got < len) {
        ssize_t r = read(fd, buf + got, len - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            die("read");
        got += (size_t)r;
    }
}

static void full_write(int fd, const char *buf, size_t len) {
    if (write(fd, buf, len) != (ssize_t)len)
        die("write");
}

static uint64_t do_syscall(long n) {
    uint64_t t0 = now_ns();
    for (long i = 0; i < n; i++)
        syscall(SYS_getppid); // glibc would not cache it, but be explicit
    return now_ns() - t0;
}

static uint64_t do_pipe(long n) {
    int ping[2], pong[2];
    char c = 'x';
    if (pipe(ping) || pipe(pong))
        die("pipe");
    pid_t pid = fork();
    if (pid < 0)
        die("fork");
    if (pid == 0) {
        for (long i = 0; i < n; i++) {
            full_read(ping[0], &c, 1);
            full_write(pong[1], &c, 1);
        }
        _exit(0);
    }
    uint64_t t0 = now_ns();
    for (long i = 0; i < n; i++) {
        full_write(ping[1], &c, 1);
        full_read(pong[0], &c, 1);
    }
    uint64_t dt = now_ns() - t0;
    waitpid(pid, NULL, 0);
    return dt;
}

static uint64_t do_ring(long n, int k) {
    if (k < 2 || k > 1024)
        die("ring size");
    int (*fds)[2] = calloc((size_t)k, sizeof(*fds));
    char c = 'x';
    long rounds = n / k > 0 ? n / k : 1;
    for (int i = 0; i < k; i++)
        if (!fds || pipe(fds[i]))
            die("pipe");
    for (int i = 1; i < k; i++) {
        pid_t pid = fork();
        if (pid < 0)
            die("fork");
        if (pid == 0) {
            for (long r = 0; r < rounds; r++) {
                full_read(fds[i][0], &c, 1);
                full_write(fds[(i + 1) % k][1], &c, 1);
            }
            _exit(0);
        }
    }
    uint64_t t0 = now_ns();
    for (long r = 0; r < rounds; r++) {
        full_write(fds[1][1], &c, 1);
        full_read(fds[0][0], &c, 1);
    }
    uint64_t dt = now_ns() - t0;
    while (wait(NULL) > 0) {
    }
    free(fds);
    return dt * (uint64_t)n / (uint64_t)(rounds * k); // per the n hops asked for
}

static uint64_t do_fault(long n) {
    const long chunk = 64;
    long page = sysconf(_SC_PAGESIZE);
    uint64_t t0 = now_ns();
    for (long done = 0; done < n; done += chunk) {
        long pages = n - done < chunk ? n - done : chunk;
        char *p = mmap(NULL, (size_t)(pages * page), PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            die("mmap");
        for (long i = 0; i < pages; i++)
            p[i * page] = 1;
        munmap(p, (size_t)(pages * page));
    }
    return now_ns() - t0;
}

static uint64_t do_fork(long n, const char *self) {
    uint64_t t0 = now_ns();
    for (long i = 0; i < n; i++) {
        pid_t pid = fork();
        if (pid < 0)
            die("fork");
        if (pid == 0) {
            if (self == NULL)
                _exit(0);
            execl(self, "ovhbench", "noop", (char *)NULL);
            _exit(127);
        }
        int status;
        if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "child failed\n");
            exit(1);
        }
    }
    return now_ns() - t0;
}

static uint64_t do_block(long n, const char *device) {
    int fd = open(device, O_RDONLY | O_DIRECT);
    if (fd < 0)
        die("open");
    off_t size = lseek(fd, 0, SEEK_END);
    long blocks = (long)(size / 4096);
    if (blocks < 1) {
        fprintf(stderr, "%s is empty\n", device);
        exit(1);
    }
    void *buf;
    if (posix_memalign(&buf, 4096, 4096))
        die("posix_memalign");
    uint64_t x = 88172645463325252ull;
    uint64_t t0 = now_ns();
    for (long i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if (pread(fd, buf, 4096, (off_t)(x % (uint64_t)blocks) * 4096) != 4096)
            die("pread");
    }
    uint64_t dt = now_ns() - t0;
    close(fd);
    return dt;
}

static int tcp_socket(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        die("socket");
    return fd;
}

static void nodelay(int fd) {
    int one = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)))
        die("setsockopt");
}

static uint64_t do_tcp(long n, int port) {
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int lfd = tcp_socket();
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(lfd, (struct sockaddr *)&addr, sizeof(addr)) || listen(lfd, 1))
        die("bind/listen");
    char c = 'x';
    pid_t pid = fork();
    if (pid < 0)
        die("fork");
    if (pid == 0) {
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0)
            die("accept");
        nodelay(fd);
        for (long i = 0; i < n; i++) {
            full_read(fd, &c, 1);
            full_write(fd, &c, 1);
        }
        close(fd);
        _exit(0);
    }
    close(lfd);
    int fd = tcp_socket();
    if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)))
        die("connect");
    nodelay(fd);
    uint64_t t0 = now_ns();
    for (long i = 0; i < n; i++) {
        full_write(fd, &c, 1);
        full_read(fd, &c, 1);
    }
    uint64_t dt = now_ns() - t0;
    close(fd);
    waitpid(pid, NULL, 0);
    return dt;
}

int main(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "noop") == 0)
        return 0;
    if (argc < 3) {
        fprintf(stderr, "usage: ovhbench syscall|pipe|ring|fault|fork|exec|block|tcp N [arg]\n");
        return 2;
    }
    const char *mode = argv[1];
    long n = atol(argv[2]);
    uint64_t dt;
    if (strcmp(mode, "syscall") == 0)
        dt = do_syscall(n);
    else if (strcmp(mode, "pipe") == 0)
        dt = do_pipe(n);
    else if (strcmp(mode, "ring") == 0 && argc >= 4)
        dt = do_ring(n, atoi(argv[3]));
    else if (strcmp(mode, "fault") == 0)
        dt = do_fault(n);
    else if (strcmp(mode, "fork") == 0)
        dt = do_fork(n, NULL);
    else if (strcmp(mode, "exec") == 0) {
        // exec by the real path: comm comes from the file name ("ovhbench")
        char self[4096];
        ssize_t len = readlink("/proc/self/exe", self, sizeof(self) - 1);
        if (len < 0)
            die("readlink");
        self[len] = 0;
        dt = do_fork(n, self);
    }
    else if (strcmp(mode, "block") == 0 && argc >= 4)
        dt = do_block(n, argv[3]);
    else if (strcmp(mode, "tcp") == 0 && argc >= 4)
        dt = do_tcp(n, atoi(argv[3]));
    else {
        fprintf(stderr, "unknown mode or missing argument: %s\n", mode);
        return 2;
    }
    printf("%llu\n", (unsigned long long)dt);
    return 0;
}
