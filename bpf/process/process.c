// process: processes created and processes exited, per process name.
//
// Created: the tracepoint task:task_newtask, which copy_process() fires once
// per new task, in the parent's context, after the point where the fork can
// no longer fail (next to the kernel's own total_forks++), with the clone
// flags as a field. A task created with CLONE_THREAD is a thread of the
// parent's process and is not counted; everything else (fork, vfork, clone
// and clone3 without CLONE_THREAD, kernel threads) is a new process.
// sched:sched_process_fork is not used: it fires for threads too and has no
// field that tells them apart without reading task_struct.
//
// Exited: the tracepoint sched:sched_process_exit, which fires once per
// exiting thread in that thread's context. Only the thread group leader
// (thread id == process id, from bpf_get_current_pid_tgid()) is counted, so
// each process counts once however many threads it had.
//
// Events: ebpf.process.exit, one per process that ends abnormally (killed by
// a signal, or exiting with a non-zero status), at its leader's exit, with
// the exit code read from task_struct.exit_code (its offset from the running
// kernel's BTF): the low 7 bits are the signal that killed it, bit 7 says a
// core was dumped, bits 8-15 are the exit status. Normal exits (code 0) send
// nothing. Who sent the signal: the raw tracepoint signal_generate, in the sender's
// context, keeps the latest signal generated for each process (its pid,
// signal, sender) in last_signal; the exit event carries the sender when
// that signal is the one it died of and a process sent it (not the kernel:
// a fault, the OOM killer).
#include <uapi/linux/ptrace.h>
#include <ebpfreceiver.h>

#ifndef MAX_ENTRIES
#define MAX_ENTRIES 4096
#endif
#define THREAD_FLAG 0x00010000 // CLONE_THREAD from uapi/linux/sched.h

struct name_key {
    char comm[EBPF_COMM_LEN];
};

BPF_PERCPU_HASH(processes_created, struct name_key, u64, MAX_ENTRIES);
BPF_PERCPU_ARRAY(processes_created_dropped, u64, 1);
BPF_PERCPU_HASH(processes_exited, struct name_key, u64, MAX_ENTRIES);
BPF_PERCPU_ARRAY(processes_exited_dropped, u64, 1);

// Without the running kernel's BTF there is no exit code to read: the
// counts stay, exit events are not sent.

struct signal_sent {
    u32 sender_pid;
    s32 sig;
    char sender_comm[EBPF_COMM_LEN];
};

struct exit_event {
    u64 ktime_ns;
    u64 cgroup_id;
    u32 pid;
    s32 exit_code;     // as a shell reports it: the status, or 128 + the signal
    s32 signal;        // the signal it died of, 0 for an exit status
    s32 status;        // the exit status, for an exit without a signal
    u32 sender_pid;    // who sent that signal (0: unknown or the kernel)
    u8 core_dumped;
    char comm[EBPF_COMM_LEN];
    char sender_comm[EBPF_COMM_LEN];
};

BPF_TABLE("lru_hash", u32, struct signal_sent, last_signal, MAX_ENTRIES);
BPF_RINGBUF_OUTPUT(exit_events, 16);  // pages: 64 KiB
BPF_ARRAY(exit_events_dropped, u64, 1);

// A signal generated for a process (group) or one of its threads, in the
// sender's context; result 0 is TRACE_SIGNAL_DELIVERED. SIGCHLD never kills.
// A raw tracepoint: signals are also generated in interrupt context (POSIX
// timers, itimers, SIGIO), where the kernel skips a classic tracepoint's
// program whenever the CPU's bpf_prog_active is held (another BPF program
// running, a bpf() map syscall); a raw one is skipped only when the same
// program is running. Its arguments are the tracepoint's prototype, so the
// classic fields are computed as there (TP_STORE_SIGINFO): code is SI_USER
// for SEND_SIG_NOINFO (info 0), SI_KERNEL for SEND_SIG_PRIV (info 1), else
// info->si_code; pid is task->pid. Offsets from the running kernel's BTF;
// without them there are no exit events (above), so no signal is kept.
#if defined(BTF_OFFSET_TASK_STRUCT_PID) && defined(BTF_OFFSET_KERNEL_SIGINFO_SI_CODE)
#define SIGINFO_SI_USER 0    // SI_USER: kill()
#define SIGINFO_SI_KERNEL 0x80  // SI_KERNEL
#define SIGINFO_SI_QUEUE -1  // sigqueue()
#define SIGINFO_SI_TKILL -6  // tkill(), tgkill()
// args: int sig, struct kernel_siginfo *info, struct task_struct *task,
// int group, int result
RAW_TRACEPOINT_PROBE(signal_generate) {
    int sig = (int)ctx->args[0];
    const void *info = (const void *)ctx->args[1];
    const void *task = (const void *)ctx->args[2];
    if ((int)ctx->args[4] != 0 || sig == 17)
        return 0;
    int code = SIGINFO_SI_USER;
    if ((unsigned long)info == 1)
        code = SIGINFO_SI_KERNEL;
    else if (info)
        bpf_probe_read_kernel(&code, sizeof(code), info + BTF_OFFSET_KERNEL_SIGINFO_SI_CODE);
    struct signal_sent s = {};
    s.sig = sig;
    // Sent by a process with kill(), sigqueue(), tkill() or tgkill(): the
    // task running is the sender. Any other code has none, whatever task
    // happened to run: the kernel raised it (a fault's SEGV_*, the OOM
    // killer's SI_KERNEL: positive codes), or it comes from a POSIX timer
    // (SI_TIMER, fired in an interrupt over whichever task ran), an AIO
    // completion, SIGIO or a message queue (negative codes, too).
    if (code == SIGINFO_SI_USER || code == SIGINFO_SI_QUEUE || code == SIGINFO_SI_TKILL) {
        s.sender_pid = bpf_get_current_pid_tgid() >> 32;
        bpf_get_current_comm(&s.sender_comm, sizeof(s.sender_comm));
    }
    u32 pid = 0;
    bpf_probe_read_kernel(&pid, sizeof(pid), task + BTF_OFFSET_TASK_STRUCT_PID);
    last_signal.update(&pid, &s);
    return 0;
}
#endif

TRACEPOINT_PROBE(task, task_newtask) {
    if (args->clone_flags & THREAD_FLAG)
        return 0;
    struct name_key key = {};
    bpf_get_current_comm(&key.comm, sizeof(key.comm)); // the creating process
    u64 zero = 0;
    u64 *count = processes_created.lookup_or_try_init(&key, &zero);
    if (count)
        (*count)++;
    else
        count_dropped(processes_created_dropped.lookup(DROPPED_KEY));
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exit) {
    u64 id = bpf_get_current_pid_tgid();
    if ((u32)id != (u32)(id >> 32))
        return 0; // a thread other than the leader
    struct name_key key = {};
    bpf_get_current_comm(&key.comm, sizeof(key.comm));
    u64 zero = 0;
    u64 *count = processes_exited.lookup_or_try_init(&key, &zero);
    if (count)
        (*count)++;
    else
        count_dropped(processes_exited_dropped.lookup(DROPPED_KEY));

    u32 pid = id >> 32;
    s32 code = 0;
#ifdef BTF_OFFSET_TASK_STRUCT_EXIT_CODE
    void *task = (void *)bpf_get_current_task();
    bpf_probe_read_kernel(&code, sizeof(code), task + BTF_OFFSET_TASK_STRUCT_EXIT_CODE);
#endif
    struct signal_sent *sent = last_signal.lookup(&pid);
    if (code == 0) {
        if (sent)
            last_signal.delete(&pid);
        return 0;
    }
    struct exit_event e = {};
    e.ktime_ns = bpf_ktime_get_ns();
    e.cgroup_id = bpf_get_current_cgroup_id();
    e.pid = pid;
    e.signal = code & 0x7f;
    e.core_dumped = (code & 0x80) ? 1 : 0;
    e.status = (code >> 8) & 0xff;
    e.exit_code = e.signal ? 128 + e.signal : e.status;
    __builtin_memcpy(e.comm, key.comm, sizeof(e.comm));
    if (sent) {
        if (e.signal && sent->sig == e.signal && sent->sender_pid && sent->sender_pid != pid) {
            e.sender_pid = sent->sender_pid;
            __builtin_memcpy(e.sender_comm, sent->sender_comm, sizeof(e.sender_comm));
        }
        last_signal.delete(&pid);
    }
    if (exit_events.ringbuf_output(&e, sizeof(e), 0))
        count_dropped_shared(exit_events_dropped.lookup(DROPPED_KEY));
    return 0;
}
