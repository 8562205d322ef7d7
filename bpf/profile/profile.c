// profile: on-CPU stack sampling, BCC's `profile` tool as a catalog program.
//
// A software cpu-clock perf event on every CPU runs perf_event__cpu_clock at
// the frequency of the parameter frequency_hz (the sidecar attaches it with
// BCC's attach_perf_event, see the manifest's hook). Each sample counts one
// in stack_counts under (process, comm, cgroup, user stack id, kernel stack
// id): the stacks themselves live once each in the stack trace map `stacks`,
// and nothing per sample goes to user space. The sidecar reads and clears
// both every interval, symbolizes the stacks and sends OTLP profiles.
//
// A stack id below zero is no stack: -EFAULT when there is none to take (a
// kernel thread has no user stack; a sample taken in user mode no kernel
// stack), anything else a stack that was lost (-EEXIST: its hash bucket holds
// another stack; -ENOMEM: the map is full), counted in lost_stacks. User
// stacks are walked by frame pointers: code built without them gives one or
// two frames (see docs/profiles.md).
#include <uapi/linux/ptrace.h>
#include <uapi/linux/bpf_perf_event.h>
#include <ebpfreceiver.h>

#ifndef MAX_SAMPLES
#define MAX_SAMPLES 10240
#endif
#ifndef MAX_STACKS
#define MAX_STACKS 16384
#endif
#ifndef MAX_FILTER_CGROUPS
#define MAX_FILTER_CGROUPS 4096
#endif
#define EFAULT_ 14 // <uapi/asm-generic/errno-base.h> EFAULT, without the header

struct sample_key {
    u32 pid;
    s32 user_stack_id;
    s32 kernel_stack_id;
    char comm[EBPF_COMM_LEN];
    u64 cgroup_id;
};

BPF_HASH(stack_counts, struct sample_key, u64, MAX_SAMPLES);
BPF_PERCPU_ARRAY(stack_counts_dropped, u64, 1);
BPF_STACK_TRACE(stacks, MAX_STACKS);
// [0]: user stacks lost, [1]: kernel stacks lost
BPF_PERCPU_ARRAY(lost_stacks, u64, 2);
// [0]: every sample taken (idle CPUs and, with a filter, other cgroups excluded)
BPF_PERCPU_ARRAY(samples, u64, 1);
// The optional filter (a profiles request's cgroups): when filter_on[0] is
// set, only tasks whose cgroup v2 id is in profiled_cgroups are sampled. The
// sidecar fills both; an instance with a filter belongs to one stream.
BPF_ARRAY(filter_on, u32, 1);
BPF_HASH(profiled_cgroups, u64, u8, MAX_FILTER_CGROUPS);

static __always_inline int stack_lost(int id) {
    return id < 0 && id != -EFAULT_;
}

int perf_event__cpu_clock(struct bpf_perf_event_data *ctx) {
    u64 id = bpf_get_current_pid_tgid();
    if ((u32)id == 0)
        return 0; // the idle task: a CPU with nothing to run
    int zero = 0;
    u64 cgroup_id = bpf_get_current_cgroup_id();
    u32 *filtered = filter_on.lookup(&zero);
    if (filtered && *filtered && !profiled_cgroups.lookup(&cgroup_id))
        return 0;
    u64 *taken = samples.lookup(&zero);
    if (taken)
        (*taken)++;
    struct sample_key key = {};
    key.pid = id >> 32;
    key.cgroup_id = cgroup_id;
    bpf_get_current_comm(&key.comm, sizeof(key.comm));
    key.user_stack_id = stacks.get_stackid(&ctx->regs, BPF_F_USER_STACK);
    key.kernel_stack_id = stacks.get_stackid(&ctx->regs, 0);
    if (stack_lost(key.user_stack_id)) {
        u64 *lost = lost_stacks.lookup(&zero);
        if (lost)
            (*lost)++;
    }
    if (stack_lost(key.kernel_stack_id)) {
        int one = 1;
        u64 *lost = lost_stacks.lookup(&one);
        if (lost)
            (*lost)++;
    }
    u64 none = 0;
    u64 *count = stack_counts.lookup_or_try_init(&key, &none);
    if (count)
        __sync_fetch_and_add(count, 1);
    else
        count_dropped(stack_counts_dropped.lookup(DROPPED_KEY));
    return 0;
}
