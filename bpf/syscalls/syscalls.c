// syscalls: system calls per syscall and process name, and failed calls per
// syscall and errno. Counted in the kernel in per-CPU maps (no atomics, no
// per-event data to user space).
#include <uapi/linux/ptrace.h>
#include <ebpfreceiver.h>

#ifndef MAX_ENTRIES
#define MAX_ENTRIES 10240
#endif
#ifndef COUNT_ERRORS
#define COUNT_ERRORS 1
#endif

struct syscall_key {
    u32 syscall_id;
    char comm[EBPF_COMM_LEN];
};

struct error_key {
    u32 syscall_id;
    u32 errno_value; // positive errno, e.g. 11 for EAGAIN
};

BPF_PERCPU_HASH(syscalls, struct syscall_key, u64, MAX_ENTRIES);
BPF_PERCPU_ARRAY(syscalls_dropped, u64, 1);

// The raw tracepoint is the cheapest hook on every syscall; args[1] is the id.
RAW_TRACEPOINT_PROBE(sys_enter) {
    struct syscall_key key = {};
    key.syscall_id = ctx->args[1];
    bpf_get_current_comm(&key.comm, sizeof(key.comm));
    u64 zero = 0;
    u64 *count = syscalls.lookup_or_try_init(&key, &zero);
    if (count)
        (*count)++;
    else
        count_dropped(syscalls_dropped.lookup(DROPPED_KEY));
    return 0;
}

#if COUNT_ERRORS
BPF_PERCPU_HASH(syscall_errors, struct error_key, u64, MAX_ENTRIES);
BPF_PERCPU_ARRAY(syscall_errors_dropped, u64, 1);

#ifndef BTF_OFFSET_PT_REGS_ORIG_AX
#error "count_errors needs the offset of pt_regs.orig_ax from the kernel's BTF; set count_errors: false on kernels without BTF"
#endif

// A raw tracepoint, like sys_enter: the classic tracepoint costs ~30 ns more
// on every syscall, and nearly all of them succeed and return at once here.
// args[0] is the task's pt_regs, args[1] the return value; the syscall
// number is pt_regs.orig_ax, at the offset the sidecar read from the running
// kernel's BTF (never from the headers BCC compiles against).
RAW_TRACEPOINT_PROBE(sys_exit) {
    long ret = (long)ctx->args[1];
    // -4095..-1 are errors; other negative values are valid results (e.g. mmap).
    if (ret >= 0 || ret < -4095)
        return 0;
    u64 id = 0;
    bpf_probe_read_kernel(&id, sizeof(id), (void *)ctx->args[0] + BTF_OFFSET_PT_REGS_ORIG_AX);
    struct error_key key = {};
    key.syscall_id = id;
    key.errno_value = -ret;
    u64 zero = 0;
    u64 *count = syscall_errors.lookup_or_try_init(&key, &zero);
    if (count)
        (*count)++;
    else
        count_dropped(syscall_errors_dropped.lookup(DROPPED_KEY));
    return 0;
}
#endif
