// faults: page faults per process, from the tracepoints
// exceptions:page_fault_user (faults taken in user mode) and
// exceptions:page_fault_kernel (faults the kernel takes on behalf of the
// task, e.g. copy_to_user() into a page not yet mapped).
//
// Both fire at exception entry in the context of the faulting task, so
// bpf_get_current_pid_tgid() names its process (tgid) without reading any
// kernel struct. The kernel's own per-task counters (minflt/majflt in
// /proc/<pid>/stat) are bumped later, in mm_account_fault(), and only for
// faults that succeed: a fault on an invalid address (SIGSEGV) is counted
// here but not there, and faults taken by get_user_pages() on behalf of
// the task are counted there but fire no exception here.
#include <uapi/linux/ptrace.h>
#include <ebpfreceiver.h>

#ifndef MAX_PROCESSES
#define MAX_PROCESSES 10240
#endif

struct process_key {
    u32 pid;
    char comm[EBPF_COMM_LEN];
    u64 cgroup_id; // cgroup v2 id: the sidecar derives container.id and k8s.pod.uid
};

BPF_PERCPU_HASH(process_faults, struct process_key, u64, MAX_PROCESSES);
BPF_PERCPU_ARRAY(process_faults_dropped, u64, 1);

static __always_inline void count_fault(void) {
    struct process_key key = {};
    key.pid = bpf_get_current_pid_tgid() >> 32;
    bpf_get_current_comm(&key.comm, sizeof(key.comm));
    key.cgroup_id = bpf_get_current_cgroup_id();
    u64 zero = 0;
    u64 *count = process_faults.lookup_or_try_init(&key, &zero);
    if (count)
        (*count)++;
    else
        count_dropped(process_faults_dropped.lookup(DROPPED_KEY));
}

TRACEPOINT_PROBE(exceptions, page_fault_user) {
    count_fault();
    return 0;
}

TRACEPOINT_PROBE(exceptions, page_fault_kernel) {
    count_fault();
    return 0;
}
