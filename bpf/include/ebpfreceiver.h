// ebpfreceiver.h: what every program of the catalog would otherwise repeat.
// The sidecar compiles each program with this folder on the include path
// (`#include <ebpfreceiver.h>`), programs of --programs-dir included.
//
// BCC turns map method calls (`counts.lookup(&key)`) into helper calls that
// carry the map's file descriptor, and only where the call is spelled out in
// the program's own file: a call inside a macro does not compile ("cannot use
// map function inside a macro") and a function cannot take a map as an
// argument. So each program keeps its two map calls (the lookup-or-init of
// its map, the lookup of its dropped counter) and these helpers do the rest:
//
//     u64 *count = execs.lookup_or_try_init(&key, &zero);
//     if (count)
//         (*count)++;
//     else
//         count_dropped(execs_dropped.lookup(DROPPED_KEY));
//
// The dropped counter is looked up only when the insert failed: passing both
// lookups to one helper would do the second on every event.
#ifndef EBPFRECEIVER_H
#define EBPFRECEIVER_H

// The size of a task's comm (TASK_COMM_LEN), fixed by the kernel's ABI
// (prctl PR_SET_NAME, /proc/<pid>/comm). Defined here so that programs need
// not include <linux/sched.h> for it: that header pulls in most of the
// kernel's headers and took 0.35 s of each program's 0.6 s compile, most of
// a cold start. A name of its own: <linux/sched.h> declares TASK_COMM_LEN as
// an enumerator, which a macro of that name would break in programs that
// include both.
#define EBPF_COMM_LEN 16

// The key of a dropped counter's only element. A dropped counter is a
// 1-element BPF_PERCPU_ARRAY (or BPF_ARRAY) of u64 named by the manifest's
// dropped_counter: the updates its map could not store because it was full.
#define DROPPED_KEY (&(int){0})

// Counts one update the map could not store, in a per-CPU dropped counter.
static __always_inline void count_dropped(u64 *dropped) {
    if (dropped)
        (*dropped)++;
}

// The same for a dropped counter all CPUs share (a BPF_ARRAY): an atomic add.
static __always_inline void count_dropped_shared(u64 *dropped) {
    if (dropped)
        __sync_fetch_and_add(dropped, 1);
}

// The slot of `value` in a log2 histogram of `slots` slots, as BCC's
// bpf_log2l() numbers them (slot 1 holds 0 and 1, slot s holds
// [2^(s-1), 2^s)), with everything above the last slot in the last slot.
static __always_inline u32 log2_slot(u64 value, u32 slots) {
    u32 slot = bpf_log2l(value);
    return slot < slots ? slot : slots - 1;
}

// Base-2 exponential histograms, as OpenTelemetry defines them: at scale s
// bucket index i holds (2^(i/2^s), 2^((i+1)/2^s)], so 2^s buckets per power
// of two, each 2^(1/2^s) times as wide as the one below (scale 2: 19 %, so
// a bucket's geometric midpoint is within 9 % of any value in it; scale 0,
// BCC's log2, is within 41 %).
//
// exp_index(v, scale) is that index for an integer v >= 2, computed exactly
// with integers: e = floor(log2 v); the mantissa m = v << (63 - e) is v with
// its top bit at bit 63; and k = how many of the thresholds 2^63 * 2^(j/2^s),
// j = 0 .. 2^s - 1, are below m (one compare each). Then
// 2^(e + (k-1)/2^s) < v <= 2^(e + k/2^s), i.e. the index is e*2^s + k - 1.
// Each threshold for j >= 1 is irrational, so comparing m against its floor
// is exact: T_s_j = floor(2^(63 + j/2^s)), computed in Python as
// isqrt applied s times to 2^(63*2^s + j). Scales 1, 2 and 3; scale is a
// compile-time constant in every caller, so the compiler keeps only its
// compares. sidecar/tests/test_exp_histogram.py checks this against an exact
// reference for every boundary and many values.
#define EXP_T_1_1 0xb504f333f9de6484ULL
#define EXP_T_2_1 0x9837f0518db8a96fULL
#define EXP_T_2_3 0xd744fccad69d6af4ULL
#define EXP_T_3_1 0x8b95c1e3ea8bd6e6ULL
#define EXP_T_3_3 0xa5fed6a9b15138eaULL
#define EXP_T_3_5 0xc5672a115506daddULL
#define EXP_T_3_7 0xeac0c6e7dd24392eULL

static __always_inline u32 exp_index(u64 v, u32 scale) {
    u32 e = bpf_log2l(v) - 1; // floor(log2 v) for v >= 1
    u64 m = v << (63 - e);
    u32 k = m > 0x8000000000000000ULL; // j = 0: v is not a power of two
    if (scale == 1) {
        k += m > EXP_T_1_1;
    } else if (scale == 2) {
        k += (m > EXP_T_2_1) + (m > EXP_T_1_1) + (m > EXP_T_2_3);
    } else if (scale == 3) {
        k += (m > EXP_T_3_1) + (m > EXP_T_2_1) + (m > EXP_T_3_3) + (m > EXP_T_1_1) +
             (m > EXP_T_3_5) + (m > EXP_T_2_3) + (m > EXP_T_3_7);
    }
    return (e << scale) + k - 1;
}

// The slots of an exponential histogram of values in units from 2^min_log2
// to 2^max_log2 at scale 1..3 (the manifest's `convention: exponential`,
// SLOT_CONVENTION_EXPONENTIAL with index_offset min_log2 * 2^scale): slot 0
// holds every value up to 2^min_log2 (OpenTelemetry's zero bucket, with that
// zero threshold), slot s >= 1 holds bucket index min_log2 * 2^scale + s - 1,
// and the last slot, index max_log2 * 2^scale, also everything above.
#define EXP_SLOTS(scale, min_log2, max_log2) ((((max_log2) - (min_log2)) << (scale)) + 2)

static __always_inline u32 exp_slot(u64 value, u32 scale, u32 min_log2, u32 max_log2) {
    if (value <= (1ULL << min_log2))
        return 0;
    u32 slot = exp_index(value, scale) - (min_log2 << scale) + 1;
    u32 last = EXP_SLOTS(scale, min_log2, max_log2) - 1;
    return slot < last ? slot : last;
}

// A latency histogram's slot at the scale its program's histogram_scale
// parameter gives (HISTOGRAM_SCALE): exp_slot() at scale 1..3, and at scale
// 0 BCC's log2 slots (log2_slot(), max_log2 + 2 of them, the last holding
// everything from 2^max_log2 up), the layout BCC's tools and earlier
// versions of the catalog use. LATENCY_SLOTS is the number of slots, the
// size of the map (or the slots per series). The manifest's histogram says
// the same: convention exponential, scale histogram_scale, min_log2, max_log2.
#define LATENCY_SLOTS(scale, min_log2, max_log2) \
    ((scale) ? EXP_SLOTS(scale, min_log2, max_log2) : (max_log2) + 2)

static __always_inline u32 latency_slot(u64 value, u32 scale, u32 min_log2, u32 max_log2) {
    if (scale == 0)
        return log2_slot(value, (max_log2) + 2);
    return exp_slot(value, scale, min_log2, max_log2);
}

// The id of a cgroup v2 (struct cgroup *), as bpf_get_current_cgroup_id()
// gives it for the current task: cgrp->kn->id, at offsets the sidecar reads
// from the running kernel's BTF when a manifest lists cgroup.kn and
// kernfs_node.id in btf_offsets. 0 for no cgroup, or without those offsets.
static __always_inline u64 cgroup_kn_id(const void *cgrp) {
#if defined(BTF_OFFSET_CGROUP_KN) && defined(BTF_OFFSET_KERNFS_NODE_ID)
    void *kn = 0;
    u64 id = 0;
    if (!cgrp)
        return 0;
    bpf_probe_read_kernel(&kn, sizeof(kn), cgrp + BTF_OFFSET_CGROUP_KN);
    if (!kn)
        return 0;
    bpf_probe_read_kernel(&id, sizeof(id), kn + BTF_OFFSET_KERNFS_NODE_ID);
    return id;
#else
    return 0;
#endif
}

// The cgroup v2 id of any task (struct task_struct *), not only the current
// one: task->cgroups->dfl_cgrp->kn->id, when the manifest lists
// task_struct.cgroups and css_set.dfl_cgrp besides cgroup.kn and
// kernfs_node.id in btf_offsets; 0 without them.
static __always_inline u64 task_cgroup_id(const void *task) {
#if defined(BTF_OFFSET_TASK_STRUCT_CGROUPS) && defined(BTF_OFFSET_CSS_SET_DFL_CGRP)
    void *cgroups = 0, *cgrp = 0;
    bpf_probe_read_kernel(&cgroups, sizeof(cgroups), task + BTF_OFFSET_TASK_STRUCT_CGROUPS);
    if (!cgroups)
        return 0;
    bpf_probe_read_kernel(&cgrp, sizeof(cgrp), cgroups + BTF_OFFSET_CSS_SET_DFL_CGRP);
    return cgroup_kn_id(cgrp);
#else
    return 0;
#endif
}

// A field of a BTF-typed kernel pointer (bpf_get_current_task_btf(), or a
// pointer loaded through one) at an offset from the running kernel's BTF
// (the manifest's btf_offsets): a plain load, which the verifier checks
// against the kernel's BTF and which reads 0 through a NULL pointer. No
// helper call, unlike bpf_probe_read_kernel(), which the same reads through
// a pointer the verifier does not know (a raw tracepoint's argument) need.
#define BTF_FIELD(ptr, type, offset) (*(type *)((void *)(ptr) + (offset)))

#if defined(BTF_OFFSET_TASK_STRUCT_SE) && defined(BTF_OFFSET_SCHED_ENTITY_CFS_RQ) && \
    defined(BTF_OFFSET_CFS_RQ_RQ)
// The run queue (struct rq *) of a BTF-typed task: task->se.cfs_rq->rq, the
// CPU's run queue whatever the task's group (needs group scheduling: no
// cfs_rq.rq in the BTF, no btf_task_rq()).
static __always_inline void *btf_task_rq(void *task) {
    void *cfs_rq = BTF_FIELD(task, void *, BTF_OFFSET_TASK_STRUCT_SE + BTF_OFFSET_SCHED_ENTITY_CFS_RQ);
    return BTF_FIELD(cfs_rq, void *, BTF_OFFSET_CFS_RQ_RQ);
}
#endif

#if defined(BTF_OFFSET_TASK_STRUCT_CGROUPS) && defined(BTF_OFFSET_CSS_SET_DFL_CGRP) && \
    defined(BTF_OFFSET_CGROUP_KN) && defined(BTF_OFFSET_KERNFS_NODE_ID)
// task_cgroup_id() of a BTF-typed task, with plain loads:
// task->cgroups->dfl_cgrp->kn->id, what bpf_get_current_cgroup_id() returns
// for the current task.
static __always_inline u64 btf_task_cgroup_id(void *task) {
    void *cgroups = BTF_FIELD(task, void *, BTF_OFFSET_TASK_STRUCT_CGROUPS);
    void *cgrp = BTF_FIELD(cgroups, void *, BTF_OFFSET_CSS_SET_DFL_CGRP);
    void *kn = BTF_FIELD(cgrp, void *, BTF_OFFSET_CGROUP_KN);
    return BTF_FIELD(kn, u64, BTF_OFFSET_KERNFS_NODE_ID);
}
#endif

// Events: a program writes an event with
//     events.ringbuf_output(&event, sizeof(event), 0)
// into a BPF_RINGBUF_OUTPUT its manifest declares under events, and, when
// that fails (the buffer is full: the sidecar is behind), counts it in the
// event's dropped counter, a 1-element BPF_ARRAY:
//     if (events.ringbuf_output(&e, sizeof(e), 0))
//         count_dropped_shared(events_dropped.lookup(DROPPED_KEY));
// Nothing blocks and nothing waits for the reader.

#endif
