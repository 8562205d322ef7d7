// cpu: on-CPU time and context switches per process, and a log2 histogram of
// on-CPU slice durations, all from the sched:sched_switch tracepoint.
//
// When sched_switch fires, `current` is still the task being switched out, so
// bpf_get_current_pid_tgid() names its process (tgid) and thread group leader
// comm without reading any kernel struct, and bpf_get_current_cgroup_id() its
// cgroup v2 (the sidecar derives container.id and k8s.pod.uid from it; in the
// key, so a process that lived between two reads is still attributed).
#include <uapi/linux/ptrace.h>
#include <linux/sched.h>

#ifndef MAX_PROCESSES
#define MAX_PROCESSES 10240
#endif
#define SLOTS 40 // 2^39 ns ≈ 550 s; longer slices land in the last slot

// prev_state as the tracepoint reports it (__trace_sched_switch_state): 0 when
// the task was still runnable, TASK_REPORT_MAX (0x100) when it was preempted,
// else one bit of the sleeping state. The low byte set = a voluntary switch.
#define SLEEP_STATE_MASK 0xff

struct process_key {
    u32 pid;
    char comm[TASK_COMM_LEN];
    u64 cgroup_id;
};

struct process_value {
    u64 oncpu_ns;
    u64 voluntary;
    u64 involuntary;
};

struct slice_value {
    u64 count;
    u64 sum_ns;
};

struct oncpu_start {
    u64 ts;
    u32 tid;
};

BPF_PERCPU_HASH(process_cpu, struct process_key, struct process_value, MAX_PROCESSES);
BPF_PERCPU_ARRAY(process_cpu_dropped, u64, 1);
BPF_PERCPU_ARRAY(cpu_usage, struct slice_value, SLOTS);
BPF_PERCPU_ARRAY(oncpu_since, struct oncpu_start, 1);

TRACEPOINT_PROBE(sched, sched_switch) {
    u64 now = bpf_ktime_get_ns();
    int zero = 0;
    struct oncpu_start *since = oncpu_since.lookup(&zero);
    if (!since)
        return 0;
    u32 prev = args->prev_pid;
    if (prev != 0) { // pid 0 is the idle task, not a process
        u64 delta = 0;
        if (since->ts != 0 && since->tid == prev) {
            delta = now - since->ts;
            u32 slot = bpf_log2l(delta);
            if (slot >= SLOTS)
                slot = SLOTS - 1;
            struct slice_value *slice = cpu_usage.lookup(&slot);
            if (slice) {
                slice->count++;
                slice->sum_ns += delta;
            }
        }
        struct process_key key = {};
        key.pid = bpf_get_current_pid_tgid() >> 32;
        bpf_get_current_comm(&key.comm, sizeof(key.comm));
        key.cgroup_id = bpf_get_current_cgroup_id();
        struct process_value empty = {};
        struct process_value *v = process_cpu.lookup_or_try_init(&key, &empty);
        if (v) {
            v->oncpu_ns += delta;
            if (args->prev_state & SLEEP_STATE_MASK)
                v->voluntary++;
            else
                v->involuntary++;
        } else {
            u64 *dropped = process_cpu_dropped.lookup(&zero);
            if (dropped)
                (*dropped)++;
        }
    }
    since->ts = now;
    since->tid = args->next_pid;
    return 0;
}
