// runqlat: how long runnable tasks wait on a CPU run queue before they run,
// as a histogram (exponential, or BCC's log2 at histogram_scale 0), like
// BCC's runqlat. From the raw tracepoint sched_switch alone.
//
// A task waits from when it is enqueued runnable (woken, new, or switched
// out while still runnable, i.e. preempted) to the sched_switch that
// switches it in. The scheduler keeps that start itself, for
// /proc/<pid>/schedstat's run_delay: task->sched_info.last_queued, set from
// the run queue's clock when the task is enqueued (sched_info_enqueue) and
// cleared when it arrives on the CPU (sched_info_arrive), which adds
// rq_clock(rq) - last_queued to run_delay. When sched_switch fires the
// scheduler has picked `next` and made it rq->curr, but has not yet called
// sched_info_arrive; rq->clock is the value it will use. So each sample is
// exactly the delta the kernel adds to next's run_delay (and a sample is
// counted exactly when the kernel counts one in pcount), with no map of
// enqueue times and no wakeup hooks: every read is a plain load through
// BTF-typed pointers (bpf_get_current_task_btf() is `prev`; its
// se.cfs_rq->rq is this CPU's run queue; rq->curr is `next`), at offsets
// from the running kernel's BTF.
//
// One difference from timing wakeup to switch-in: a queued task that
// migrates to another CPU is dequeued (the kernel adds the wait so far to
// run_delay then) and enqueued again there, so its sample is the wait on
// the CPU it runs on.
//
// With PER_CGROUP, each wait is counted under the waiting task's cgroup v2 id
// (a noisy neighbour shows up as other pods' waits), instead of in one
// node-wide histogram: next->cgroups->dfl_cgrp->kn->id, read the same way.
#include <uapi/linux/ptrace.h>
#include <ebpfreceiver.h>

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

#if !defined(BTF_OFFSET_TASK_STRUCT_SE) || !defined(BTF_OFFSET_SCHED_ENTITY_CFS_RQ) ||        \
    !defined(BTF_OFFSET_CFS_RQ_RQ) || !defined(BTF_OFFSET_RQ_CURR) ||                        \
    !defined(BTF_OFFSET_RQ_CLOCK) || !defined(BTF_OFFSET_TASK_STRUCT_SCHED_INFO) ||          \
    !defined(BTF_OFFSET_SCHED_INFO_LAST_QUEUED)
#error "runqlat reads the scheduler's sched_info (CONFIG_SCHED_INFO) and run queue through task_struct.se, sched_entity.cfs_rq, cfs_rq.rq (group scheduling), rq.curr, rq.clock, task_struct.sched_info and sched_info.last_queued from the kernel's BTF, which this kernel does not all have"
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
struct cgroup_slot {
    u64 cgroup_id;
    u32 slot;
};
BPF_PERCPU_ARRAY(runqueue_latency_by_cgroup_dropped, u64, 1);
BPF_HASH(runqueue_latency_by_cgroup, struct cgroup_slot, struct slot_value, MAX_CGROUPS * SLOTS);
#else
BPF_PERCPU_ARRAY(runqueue_latency, struct slot_value, SLOTS);
#endif

// args: bool preempt, struct task_struct *prev, struct task_struct *next,
// unsigned int prev_state
RAW_TRACEPOINT_PROBE(sched_switch) {
    void *rq = btf_task_rq(bpf_get_current_task_btf()); // prev's: this CPU's
    void *next = BTF_FIELD(rq, void *, BTF_OFFSET_RQ_CURR);
    // rq->curr is next here on the kernels this is written for; were it
    // not, nothing is counted rather than another task's wait
    if ((u64)next != ctx->args[2])
        return 0;
    u64 queued = BTF_FIELD(next, u64, BTF_OFFSET_TASK_STRUCT_SCHED_INFO + BTF_OFFSET_SCHED_INFO_LAST_QUEUED);
    if (queued == 0)
        return 0; // not waiting (the idle task, or enqueued before sched_info counted it)
    u64 now = BTF_FIELD(rq, u64, BTF_OFFSET_RQ_CLOCK);
    u64 delta = now > queued ? now - queued : 0;
    u32 slot = latency_slot(delta, HISTOGRAM_SCALE, MIN_LOG2, MAX_LOG2);
#if PER_CGROUP
    struct cgroup_slot key = {};
    key.cgroup_id = btf_task_cgroup_id(next);
    key.slot = slot;
    struct slot_value zero = {};
    struct slot_value *v = runqueue_latency_by_cgroup.lookup_or_try_init(&key, &zero);
    if (v) {
        __sync_fetch_and_add(&v->count, 1);
        __sync_fetch_and_add(&v->sum_ns, delta);
    } else {
        count_dropped(runqueue_latency_by_cgroup_dropped.lookup(DROPPED_KEY));
    }
#else
    struct slot_value *v = runqueue_latency.lookup(&slot);
    if (v) {
        v->count++;
        v->sum_ns += delta;
    }
#endif
    return 0;
}
