// runqlat: how long runnable tasks wait on a CPU run queue before they run,
// as a histogram (exponential, or BCC's log2 at histogram_scale 0), like BCC's runqlat. From the raw tracepoints
// sched_wakeup, sched_wakeup_new and sched_switch (and sched_process_free,
// to forget a thread).
//
// A task is enqueued when it is woken (or, new, first woken) and when it is
// switched out while still runnable (preempted); the latency is the time from
// that moment to the sched_switch that switches it in.
//
// These hooks run on every wakeup and context switch, so the hot path does as
// little as it can (docs/overhead.md measures it). Enqueue times are kept in
// a bounded hash keyed by the thread's struct task_struct pointer, a number
// the raw tracepoints pass in (only compared, never read: no read of the
// task's pid on every event). A thread's entry is written in place at each
// enqueue and its start time zeroed in place at its switch-in; it is
// inserted at the thread's first wait and deleted only when the thread is
// freed (sched_process_free, after which its pointer can be reused). An
// insert and a delete on every wait cost about three times a lookup, so the
// map holds the live threads that have waited at least once, not only those
// waiting right now, and max_waiting is sized for threads.
//
// With PER_CGROUP, each wait is counted under the waiting task's cgroup v2 id
// (a noisy neighbour shows up as other pods' waits), instead of in one
// node-wide histogram. The cgroup is taken when the wait starts: from the
// task itself at a preemption (it is the current task), and through
// task->cgroups->dfl_cgrp->kn->id at a wakeup, where the current task is the
// waker; the offsets come from the running kernel's BTF.
#include <uapi/linux/ptrace.h>
#include <ebpfreceiver.h>

#ifndef MAX_WAITING
#define MAX_WAITING 32768
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
BPF_HASH(enqueued_at, u64, struct wait_start, MAX_WAITING);
// Waits not measured: their enqueue time or their cgroup's slot did not fit.
BPF_PERCPU_ARRAY(runqueue_latency_by_cgroup_dropped, u64, 1);
// Shared by all CPUs (a per-CPU hash would take its size once per CPU), so
// the counts are added atomically.
BPF_HASH(runqueue_latency_by_cgroup, struct cgroup_slot, struct slot_value, MAX_CGROUPS * SLOTS);

// The cgroup v2 id of a task that is not the current one, as
// bpf_get_current_cgroup_id() would give it for the current one.
#else
BPF_HASH(enqueued_at, u64, u64, MAX_WAITING); // 0: not waiting
// Enqueue times that did not fit in enqueued_at: each is one lost sample.
BPF_PERCPU_ARRAY(runqueue_latency_dropped, u64, 1);
BPF_PERCPU_ARRAY(runqueue_latency, struct slot_value, SLOTS);
#endif

// task: the waiting task's struct task_struct pointer (the key); current:
// whether it is the current task (a preemption), whose cgroup is read
// without following pointers.
static __always_inline void enqueue(u64 task, int current) {
#if PER_CGROUP
    struct wait_start start = {.ts = bpf_ktime_get_ns()};
    start.cgroup_id = current ? bpf_get_current_cgroup_id() : task_cgroup_id((void *)task);
    struct wait_start *waiting = enqueued_at.lookup(&task);
    if (waiting) {
        *waiting = start;
        return;
    }
    if (enqueued_at.update(&task, &start) != 0)
        count_dropped(runqueue_latency_by_cgroup_dropped.lookup(DROPPED_KEY));
#else
    u64 ts = bpf_ktime_get_ns();
    u64 *waiting = enqueued_at.lookup(&task);
    if (waiting) {
        *waiting = ts;
        return;
    }
    if (enqueued_at.update(&task, &ts) != 0)
        count_dropped(runqueue_latency_dropped.lookup(DROPPED_KEY));
#endif
}

// Raw tracepoints, not classic ones: a classic tracepoint program is skipped
// while any task on the CPU is inside a bpf() map syscall (bpf_prog_active),
// so a wakeup or switch-in of such a task would be lost.

// args: struct task_struct *p (never the idle task)
RAW_TRACEPOINT_PROBE(sched_wakeup) {
    enqueue(ctx->args[0], 0);
    return 0;
}

RAW_TRACEPOINT_PROBE(sched_wakeup_new) {
    enqueue(ctx->args[0], 0);
    return 0;
}

// args: struct task_struct *p, freed after its last switch: its pointer may
// name a new task from now on.
RAW_TRACEPOINT_PROBE(sched_process_free) {
    u64 task = ctx->args[0];
    enqueued_at.delete(&task);
    return 0;
}

// args: bool preempt, struct task_struct *prev, struct task_struct *next,
// unsigned int prev_state (the raw task state; 0 = still runnable)
RAW_TRACEPOINT_PROBE(sched_switch) {
    // Still on the run queue after this switch: preempted (even if it had
    // just set a sleeping state, it stays queued until it calls schedule()
    // itself), or switched out while runnable (yield, cond_resched). The
    // idle task (pid 0) is never queued.
    if ((ctx->args[0] || (unsigned int)ctx->args[3] == 0) && (u32)bpf_get_current_pid_tgid() != 0)
        enqueue(ctx->args[1], 1);
    // The idle task switched in finds no entry: it is never enqueued.
    u64 next = ctx->args[2];
#if PER_CGROUP
    struct wait_start *start = enqueued_at.lookup(&next);
    if (!start || start->ts == 0)
        return 0; // woken before the program was attached
    u64 now = bpf_ktime_get_ns();
    u64 delta = now > start->ts ? now - start->ts : 0;
    struct cgroup_slot key = {.cgroup_id = start->cgroup_id, .slot = latency_slot(delta, HISTOGRAM_SCALE, MIN_LOG2, MAX_LOG2)};
    start->ts = 0;
    struct slot_value zero = {};
    struct slot_value *v = runqueue_latency_by_cgroup.lookup_or_try_init(&key, &zero);
    if (v) {
        __sync_fetch_and_add(&v->count, 1);
        __sync_fetch_and_add(&v->sum_ns, delta);
    } else
        count_dropped(runqueue_latency_by_cgroup_dropped.lookup(DROPPED_KEY));
#else
    u64 *start = enqueued_at.lookup(&next);
    if (!start || *start == 0)
        return 0; // woken before the program was attached
    u64 now = bpf_ktime_get_ns();
    u64 delta = now > *start ? now - *start : 0;
    *start = 0;
    u32 slot = latency_slot(delta, HISTOGRAM_SCALE, MIN_LOG2, MAX_LOG2);
    struct slot_value *v = runqueue_latency.lookup(&slot);
    if (v) {
        v->count++;
        v->sum_ns += delta;
    }
#endif
    return 0;
}
