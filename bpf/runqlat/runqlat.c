// runqlat: how long runnable tasks wait on a CPU run queue before they run,
// as a histogram (exponential, or BCC's log2 at histogram_scale 0), like BCC's runqlat. From the raw tracepoints
// sched_wakeup, sched_wakeup_new and sched_switch.
//
// A task is enqueued when it is woken (or, new, first woken) and when it is
// switched out while still runnable (preempted); the latency is the time from
// that moment to the sched_switch that switches it in. Enqueue times are kept
// per thread id in a bounded hash; the entry is deleted when the thread runs,
// so the map only holds threads that are waiting right now.
//
// With PER_CGROUP, each wait is counted under the waiting task's cgroup v2 id
// (a noisy neighbour shows up as other pods' waits), instead of in one
// node-wide histogram. The cgroup is taken when the wait starts: from the
// task itself at a preemption (it is the current task), and through
// task->cgroups->dfl_cgrp->kn->id at a wakeup, where the current task is the
// waker; the offsets come from the running kernel's BTF, like task_struct.pid.
#include <uapi/linux/ptrace.h>
#include <ebpfreceiver.h>

#ifndef MAX_WAITING
#define MAX_WAITING 10240
#endif
#ifndef HISTOGRAM_SCALE
#define HISTOGRAM_SCALE 2
#endif
// Buckets from 2^10 ns (1 µs) to 2^38 ns (275 s); the manifest's histogram says the same.
#define MIN_LOG2 10
#define MAX_LOG2 38
#define SLOTS LATENCY_SLOTS(HISTOGRAM_SCALE, MIN_LOG2, MAX_LOG2)

#ifndef PER_CGROUP
#define PER_CGROUP 0
#endif
#ifndef MAX_CGROUPS
#define MAX_CGROUPS 1024
#endif

#ifndef BTF_OFFSET_TASK_STRUCT_PID
#error "runqlat needs the offset of task_struct.pid from the kernel's BTF (/sys/kernel/btf/vmlinux)"
#endif

struct slot_value {
    u64 count;
    u64 sum_ns;
};

#if PER_CGROUP
#if !defined(BTF_OFFSET_TASK_STRUCT_CGROUPS) || !defined(BTF_OFFSET_CSS_SET_DFL_CGRP) || \
    !defined(BTF_OFFSET_CGROUP_KN) || !defined(BTF_OFFSET_KERNFS_NODE_ID)
#error "runqlat per_cgroup needs task_struct.cgroups, css_set.dfl_cgrp, cgroup.kn and kernfs_node.id from the kernel's BTF"
#endif
struct wait_start {
    u64 ts;
    u64 cgroup_id;
};
struct cgroup_slot {
    u64 cgroup_id;
    u32 slot;
};
BPF_HASH(enqueued_at, u32, struct wait_start, MAX_WAITING);
// Waits not measured: their enqueue time or their cgroup's slot did not fit.
BPF_PERCPU_ARRAY(runqueue_latency_by_cgroup_dropped, u64, 1);
// Shared by all CPUs (a per-CPU hash would take its size once per CPU), so
// the counts are added atomically.
BPF_HASH(runqueue_latency_by_cgroup, struct cgroup_slot, struct slot_value, MAX_CGROUPS * SLOTS);

// The cgroup v2 id of a task that is not the current one, as
// bpf_get_current_cgroup_id() would give it for the current one.
#else
BPF_HASH(enqueued_at, u32, u64, MAX_WAITING);
// Enqueue times that did not fit in enqueued_at: each is one lost sample.
BPF_PERCPU_ARRAY(runqueue_latency_dropped, u64, 1);
BPF_PERCPU_ARRAY(runqueue_latency, struct slot_value, SLOTS);
#endif

// task: the waiting task, or 0 for the current one (a preemption).
static __always_inline void enqueue(u32 tid, void *task) {
    if (tid == 0) // the idle task is never queued
        return;
#if PER_CGROUP
    struct wait_start start = {.ts = bpf_ktime_get_ns()};
    start.cgroup_id = task ? task_cgroup_id(task) : bpf_get_current_cgroup_id();
    if (enqueued_at.update(&tid, &start) != 0)
        count_dropped(runqueue_latency_by_cgroup_dropped.lookup(DROPPED_KEY));
#else
    u64 ts = bpf_ktime_get_ns();
    if (enqueued_at.update(&tid, &ts) != 0)
        count_dropped(runqueue_latency_dropped.lookup(DROPPED_KEY));
#endif
}

// Raw tracepoints, not classic ones: a classic tracepoint program is skipped
// while any task on the CPU is inside a bpf() map syscall (bpf_prog_active),
// so a wakeup or switch-in of such a task would be lost. Task ids are read at
// the offset of task_struct.pid in the running kernel's BTF, which the
// sidecar passes in.
static __always_inline u32 task_tid(void *task) {
    u32 tid = 0;
    bpf_probe_read_kernel(&tid, sizeof(tid), task + BTF_OFFSET_TASK_STRUCT_PID);
    return tid;
}

// args: struct task_struct *p
RAW_TRACEPOINT_PROBE(sched_wakeup) {
    void *task = (void *)ctx->args[0];
    enqueue(task_tid(task), task);
    return 0;
}

RAW_TRACEPOINT_PROBE(sched_wakeup_new) {
    void *task = (void *)ctx->args[0];
    enqueue(task_tid(task), task);
    return 0;
}

// args: bool preempt, struct task_struct *prev, struct task_struct *next,
// unsigned int prev_state (the raw task state; 0 = still runnable)
RAW_TRACEPOINT_PROBE(sched_switch) {
    // Still on the run queue after this switch: preempted (even if it had
    // just set a sleeping state, it stays queued until it calls schedule()
    // itself), or switched out while runnable (yield, cond_resched).
    if (ctx->args[0] || (unsigned int)ctx->args[3] == 0)
        enqueue((u32)bpf_get_current_pid_tgid(), 0);
    u32 next = task_tid((void *)ctx->args[2]);
    if (next == 0)
        return 0;
#if PER_CGROUP
    struct wait_start *start = enqueued_at.lookup(&next);
    if (!start)
        return 0; // woken before the program was attached
    u64 now = bpf_ktime_get_ns();
    u64 delta = now > start->ts ? now - start->ts : 0;
    struct cgroup_slot key = {.cgroup_id = start->cgroup_id, .slot = latency_slot(delta, HISTOGRAM_SCALE, MIN_LOG2, MAX_LOG2)};
    enqueued_at.delete(&next);
    struct slot_value zero = {};
    struct slot_value *v = runqueue_latency_by_cgroup.lookup_or_try_init(&key, &zero);
    if (v) {
        __sync_fetch_and_add(&v->count, 1);
        __sync_fetch_and_add(&v->sum_ns, delta);
    } else
        count_dropped(runqueue_latency_by_cgroup_dropped.lookup(DROPPED_KEY));
#else
    u64 *start = enqueued_at.lookup(&next);
    if (!start)
        return 0; // woken before the program was attached
    u64 now = bpf_ktime_get_ns();
    u64 delta = now > *start ? now - *start : 0;
    enqueued_at.delete(&next);
    u32 slot = latency_slot(delta, HISTOGRAM_SCALE, MIN_LOG2, MAX_LOG2);
    struct slot_value *v = runqueue_latency.lookup(&slot);
    if (v) {
        v->count++;
        v->sum_ns += delta;
    }
#endif
    return 0;
}
