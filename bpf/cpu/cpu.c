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
// When sched_switch fires, `current` is still the task being switched out, so
// bpf_get_current_pid_tgid() names its process (tgid) and thread group leader
// comm, and bpf_get_current_cgroup_id() its cgroup v2 (the sidecar derives
// container.id and k8s.pod.uid from it; in the key, so a process that lived
// between two reads is still attributed). Only the next task's thread id is
// read from a struct: task_struct.pid, at the offset of the running kernel's
// BTF that the sidecar passes in (never from the headers BCC compiles with).
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

#ifndef BTF_OFFSET_TASK_STRUCT_PID
#error "the cpu program needs the offset of task_struct.pid from the kernel's BTF (/sys/kernel/btf/vmlinux)"
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
};

struct slice_value {
    u64 count;
    u64 sum_ns;
};

struct oncpu_start {
    u64 ts;
    u32 tid;
};

// A plain hash, not an LRU one: an LRU map would evict idle live processes
// under churn and restart their cumulative counts under the same start time.
// A full map instead drops new processes, counted in process_cpu_dropped and
// reported by the receiver; the sidecar deletes exited processes' entries
// after their last export, and max_processes raises the size.
BPF_PERCPU_HASH(process_cpu, struct process_key, struct process_value, MAX_PROCESSES);
BPF_PERCPU_ARRAY(process_cpu_dropped, u64, 1);
BPF_PERCPU_ARRAY(cpu_usage, struct slice_value, SLOTS);
BPF_PERCPU_ARRAY(oncpu_since, struct oncpu_start, 1);

// args: bool preempt, struct task_struct *prev, struct task_struct *next,
// unsigned int prev_state (the raw task state, since Linux 5.18).
RAW_TRACEPOINT_PROBE(sched_switch) {
    u64 now = bpf_ktime_get_ns();
    int zero = 0;
    struct oncpu_start *since = oncpu_since.lookup(&zero);
    if (!since)
        return 0;
    u32 prev = (u32)bpf_get_current_pid_tgid();
    if (prev != 0) { // pid 0 is the idle task, not a process
        u64 delta = 0;
        if (since->ts != 0 && since->tid == prev) {
            delta = now - since->ts;
            u32 slot = latency_slot(delta, HISTOGRAM_SCALE, MIN_LOG2, MAX_LOG2);
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
            // As __schedule() counts nvcsw/nivcsw: voluntary when the task
            // was not preempted and no longer runnable.
            if (!ctx->args[0] && (unsigned int)ctx->args[3] != 0)
                v->voluntary++;
            else
                v->involuntary++;
        } else {
            count_dropped(process_cpu_dropped.lookup(DROPPED_KEY));
        }
    }
    u32 next = 0;
    bpf_probe_read_kernel(&next, sizeof(next),
                          (void *)ctx->args[2] + BTF_OFFSET_TASK_STRUCT_PID);
    since->ts = now;
    since->tid = next;
    return 0;
}
