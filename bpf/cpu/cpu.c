// cpu: on-CPU time and context switches per process, and a histogram of
// on-CPU slice durations, all from the raw tracepoint sched_switch.
//
// A raw tracepoint, not the classic one: classic tracepoint programs are
// skipped while any task on the CPU is inside a bpf() map syscall (the
// kernel's bpf_prog_active guard), and a task preempted there makes the next
// switch-in invisible, losing the whole next slice (2-20 % of CPU time
// measured under load, with the sidecar's own map reads as one such task).
// Raw tracepoints only guard against their own recursion. They are cheaper too.
//
// When sched_switch fires, `current` is still the task being switched out.
// It runs on every context switch, so every helper call counts (each costs
// 10-30 ns on a VM with retpolines and return thunks, docs/overhead.md): the
// outgoing task's process id (tgid), its comm and its cgroup v2 id (the
// sidecar derives container.id and k8s.pod.uid from it; in the key, so a
// process that lived between two reads is still attributed) are read with
// plain loads from bpf_get_current_task_btf(), the pointer the verifier
// knows as a task_struct, at the offsets of the running kernel's BTF that
// the sidecar passes in (never from the headers BCC compiles with): the same
// values bpf_get_current_pid_tgid(), bpf_get_current_comm() and
// bpf_get_current_cgroup_id() return, without their three calls. The slice
// start is matched to the task by its task_struct pointer (the raw
// tracepoint's `next`, stored as a number and only compared), which needs no
// read of the incoming task at all.
//
// Write-behind (the manifest's write_behind): the per-process hash lookup is
// most of what the program costs (~40-60 ns of ~100 per switch, the kernel's
// jhash and bucket walk behind a call, docs/overhead.md), and a CPU mostly
// switches between a few processes. So each CPU adds its switches to a small
// direct-mapped cache of its recent processes (process_cpu_pending), and
// writes an entry into process_cpu only when another process takes its slot,
// or when the sidecar is about to read: the sidecar bumps
// process_cpu_pending_generation, makes every CPU switch (a thread of its
// own visits each CPU), and waits until each CPU's
// process_cpu_pending_flushed shows that it wrote its whole cache at that
// switch. A read thus sees every switch before its barrier, as before.
#include <uapi/linux/ptrace.h>
#include <ebpfreceiver.h>

#ifndef MAX_PROCESSES
#define MAX_PROCESSES 10240
#endif
#ifndef HISTOGRAM_SCALE
#define HISTOGRAM_SCALE 2
#endif
// Buckets from 2^10 ns (1 µs) to 2^38 ns (275 s); the manifest's histogram says the same.
#define MIN_LOG2 10
#define MAX_LOG2 38
#define SLOTS LATENCY_SLOTS(HISTOGRAM_SCALE, MIN_LOG2, MAX_LOG2)

#if !defined(BTF_OFFSET_TASK_STRUCT_PID) || !defined(BTF_OFFSET_TASK_STRUCT_TGID) ||         \
    !defined(BTF_OFFSET_TASK_STRUCT_COMM) || !defined(BTF_OFFSET_TASK_STRUCT_CGROUPS) ||       \
    !defined(BTF_OFFSET_CSS_SET_DFL_CGRP) || !defined(BTF_OFFSET_CGROUP_KN) ||                 \
    !defined(BTF_OFFSET_KERNFS_NODE_ID)
#error "the cpu program needs task_struct.pid, .tgid, .comm, .cgroups, css_set.dfl_cgrp, cgroup.kn and kernfs_node.id from the kernel's BTF (/sys/kernel/btf/vmlinux)"
#endif

struct process_key {
    u32 pid;
    char comm[EBPF_COMM_LEN];
    u64 cgroup_id;
};

struct process_value {
    u64 oncpu_ns;
    u64 voluntary;
    u64 involuntary;
    u64 __written; // the written-keys epoch this CPU's part was last written in
};

struct slice_value {
    u64 count;
    u64 sum_ns;
};

struct oncpu_start {
    u64 ts;
    u64 task; // the task switched in: its struct task_struct *, only compared
};

// A plain hash, not an LRU one: an LRU map would evict idle live processes
// under churn and restart their cumulative counts under the same start time.
// A full map instead drops new processes, counted in process_cpu_dropped and
// reported by the receiver; the sidecar deletes exited processes' entries
// after their last export, and max_processes raises the size.
BPF_PERCPU_HASH(process_cpu, struct process_key, struct process_value, MAX_PROCESSES);
BPF_PERCPU_ARRAY(process_cpu_dropped, u64, 1);
// Written keys (the manifest's written_keys), for changes-only reads of a
// large map: the sidecar looks up only the keys written since its previous
// read instead of walking the whole map (the kernel's walk alone takes
// ~0.5 s for a million per-CPU entries, docs/overhead.md). The sidecar
// counts epochs in process_cpu_written_epoch, 0 while no changes-only stream
// reads the map: then nothing is recorded and this costs one compare per
// switch. Otherwise the first write of an entry in an epoch (per CPU: the
// epoch is kept in the value) puts its key in the set of the epoch's
// parity; the sidecar starts the next epoch, then takes the previous one's
// set, so a write racing the switch lands in a set it takes one read later.
// A key that does not fit is counted in process_cpu_written_lost, and the
// sidecar reads the whole map then.
BPF_ARRAY(process_cpu_written_epoch, u64, 1);
BPF_HASH(process_cpu_written_0, struct process_key, u8, MAX_PROCESSES);
BPF_HASH(process_cpu_written_1, struct process_key, u8, MAX_PROCESSES);
BPF_ARRAY(process_cpu_written_lost, u64, 1);
// Write-behind (see the top): per CPU, PENDING_SLOTS recent processes and
// what their switches added since the entry was last written into
// process_cpu; pid 0 marks a free slot (the idle task is not counted).
#define PENDING_SLOTS_LOG2 5
#define PENDING_SLOTS (1 << PENDING_SLOTS_LOG2)
struct pending_process {
    struct process_key key;
    u64 oncpu_ns;
    u64 voluntary;
    u64 involuntary;
};
BPF_PERCPU_ARRAY(process_cpu_pending, struct pending_process, PENDING_SLOTS);
// The sidecar's barrier count (0 until its first read), and per CPU the
// count whose barrier it last wrote its whole cache for.
BPF_ARRAY(process_cpu_pending_generation, u64, 1);
BPF_PERCPU_ARRAY(process_cpu_pending_flushed, u64, 1);
BPF_PERCPU_ARRAY(cpu_usage, struct slice_value, SLOTS);
BPF_PERCPU_ARRAY(oncpu_since, struct oncpu_start, 1);

#if defined(BTF_OFFSET_TASK_STRUCT_SE) && defined(BTF_OFFSET_SCHED_ENTITY_CFS_RQ) &&              \
    defined(BTF_OFFSET_CFS_RQ_RQ) && defined(BTF_OFFSET_RQ_CLOCK_TASK)
// The run queue's task clock, task->se.cfs_rq->rq->clock_task: the clock
// the scheduler adds on-CPU time with (update_curr(): sum_exec_runtime,
// /proc/<pid>/schedstat, cgroup cpu.stat), which __schedule() has just
// updated. Both ends of a slice read the same value the kernel used for
// them, so slices add up to the kernel's own account, and steal time is
// left out as there. Three loads instead of bpf_ktime_get_ns(), a call to
// the clocksource behind a retpoline (docs/overhead.md).
static __always_inline u64 task_clock(void *task) {
    return BTF_FIELD(btf_task_rq(task), u64, BTF_OFFSET_RQ_CLOCK_TASK);
}
#else
// A kernel without group scheduling (no cfs_rq.rq): the monotonic clock.
static __always_inline u64 task_clock(void *task) { return bpf_ktime_get_ns(); }
#endif

#if defined(BTF_OFFSET_TASK_STRUCT_SE) && defined(BTF_OFFSET_SCHED_ENTITY_SUM_EXEC_RUNTIME) &&    \
    defined(BTF_OFFSET_SCHED_ENTITY_PREV_SUM_EXEC_RUNTIME)
// The slice of a task whose switch-in this CPU saw no sched_switch event
// for. Kernels do not promise one for every switch: on the Firecracker
// guest kernels this project is tested on, a thread of the guest agent
// (tokio-rt-worker) leaves the CPU with no event, ftrace's own sched_switch
// included, so whichever task follows it runs unseen until its switch-out;
// counting nothing lost up to a whole slice (0.27 s once, for a spinning
// process). The scheduler's own account of the slice is
// se.sum_exec_runtime - se.prev_sum_exec_runtime (set when the fair class
// picks the task; within 1 µs of the traced slices otherwise). Another
// class leaves prev_sum_exec_runtime stale, so the result is capped at the
// time since this CPU's last event, before which the slice cannot have begun.
static __always_inline u64 untraced_slice(void *task, u64 since_last_event) {
    u64 ran = BTF_FIELD(task, u64, BTF_OFFSET_TASK_STRUCT_SE + BTF_OFFSET_SCHED_ENTITY_SUM_EXEC_RUNTIME) -
              BTF_FIELD(task, u64, BTF_OFFSET_TASK_STRUCT_SE + BTF_OFFSET_SCHED_ENTITY_PREV_SUM_EXEC_RUNTIME);
    return ran < since_last_event ? ran : since_last_event;
}
#else
static __always_inline u64 untraced_slice(void *task, u64 since_last_event) { return 0; }
#endif

// Adds a pending entry into process_cpu (created on its first write) and
// frees its slot; a full map drops it, counted in process_cpu_dropped.
static __always_inline void write_pending(struct pending_process *p) {
    struct process_value empty = {};
    struct process_value *v = process_cpu.lookup_or_try_init(&p->key, &empty);
    if (v) {
        v->oncpu_ns += p->oncpu_ns;
        v->voluntary += p->voluntary;
        v->involuntary += p->involuntary;
        int zero = 0;
        u64 *epoch = process_cpu_written_epoch.lookup(&zero);
        if (epoch && *epoch != v->__written) {
            u64 e = *epoch;
            v->__written = e;
            u8 one = 1;
            int failed = (e & 1) ? process_cpu_written_1.update(&p->key, &one)
                                 : process_cpu_written_0.update(&p->key, &one);
            if (failed)
                count_dropped_shared(process_cpu_written_lost.lookup(DROPPED_KEY));
        }
    } else {
        count_dropped(process_cpu_dropped.lookup(DROPPED_KEY));
    }
    p->key.pid = 0;
}

// args: bool preempt, struct task_struct *prev, struct task_struct *next,
// unsigned int prev_state (the raw task state, since Linux 5.18).
RAW_TRACEPOINT_PROBE(sched_switch) {
    void *prev = bpf_get_current_task_btf(); // = args[1]
    u64 now = task_clock(prev);
    int zero = 0;
    struct oncpu_start *since = oncpu_since.lookup(&zero);
    if (!since)
        return 0;
    u32 tgid = BTF_FIELD(prev, u32, BTF_OFFSET_TASK_STRUCT_TGID);
    if (BTF_FIELD(prev, u32, BTF_OFFSET_TASK_STRUCT_PID) != 0) { // pid 0 is the idle task
        u64 delta = 0;
        if (since->ts != 0) {
            if (since->task == ctx->args[1])
                delta = now - since->ts;
            else
                delta = untraced_slice(prev, now - since->ts);
            u32 slot = latency_slot(delta, HISTOGRAM_SCALE, MIN_LOG2, MAX_LOG2);
            struct slice_value *slice = cpu_usage.lookup(&slot);
            if (slice) {
                slice->count++;
                slice->sum_ns += delta;
            }
        }
        // comm is NUL-padded to its 16 bytes (__set_task_comm pads), as
        // bpf_get_current_comm() would copy it.
        u64 comm0 = BTF_FIELD(prev, u64, BTF_OFFSET_TASK_STRUCT_COMM);
        u64 comm1 = BTF_FIELD(prev, u64, BTF_OFFSET_TASK_STRUCT_COMM + 8);
        u64 cgroup_id = btf_task_cgroup_id(prev);
        // Fibonacci hashing: consecutive pids go to different slots.
        u32 at = (tgid * 2654435769u) >> (32 - PENDING_SLOTS_LOG2);
        struct pending_process *p = process_cpu_pending.lookup(&at);
        if (p) {
            if (p->key.pid != tgid || *(u64 *)&p->key.comm[0] != comm0 ||
                *(u64 *)&p->key.comm[8] != comm1 || p->key.cgroup_id != cgroup_id) {
                if (p->key.pid != 0)
                    write_pending(p); // another process had the slot
                p->key.pid = tgid;
                *(u64 *)&p->key.comm[0] = comm0;
                *(u64 *)&p->key.comm[8] = comm1;
                p->key.cgroup_id = cgroup_id;
                p->oncpu_ns = 0;
                p->voluntary = 0;
                p->involuntary = 0;
            }
            p->oncpu_ns += delta;
            // As __schedule() counts nvcsw/nivcsw: voluntary when the task
            // was not preempted and no longer runnable.
            if (!ctx->args[0] && (unsigned int)ctx->args[3] != 0)
                p->voluntary++;
            else
                p->involuntary++;
        }
    }
    since->ts = now;
    since->task = ctx->args[2];
    // The sidecar's barrier: after this switch's own slice, write the whole
    // cache, then say so.
    u64 *generation = process_cpu_pending_generation.lookup(&zero);
    u64 *flushed = process_cpu_pending_flushed.lookup(&zero);
    if (generation && flushed && *generation != *flushed) {
        u64 g = *generation;
#pragma clang loop unroll(disable)
        for (u32 i = 0; i < PENDING_SLOTS; i++) {
            u32 slot = i;
            struct pending_process *p = process_cpu_pending.lookup(&slot);
            if (p && p->key.pid != 0)
                write_pending(p);
        }
        *flushed = g;
    }
    return 0;
}
