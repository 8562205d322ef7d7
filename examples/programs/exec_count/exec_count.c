// exec_count: successful execve() calls per new executable name, user and
// cgroup, from the tracepoint sched:sched_process_exec (an example of an own
// program; see docs/own-programs.md).
//
// The tracepoint fires after the new image is in place, so `current` already
// carries the new comm (the basename of the executed file, 15 bytes at most).
// Everything comes from helpers: no kernel struct is read.
#include <uapi/linux/ptrace.h>
#include <linux/sched.h>
#include <ebpfreceiver.h>

#ifndef MAX_ENTRIES
#define MAX_ENTRIES 4096
#endif

struct exec_key {
    char comm[TASK_COMM_LEN];
    u32 uid;
    u64 cgroup_id;
};

BPF_PERCPU_HASH(execs, struct exec_key, u64, MAX_ENTRIES);
BPF_PERCPU_ARRAY(execs_dropped, u64, 1);

TRACEPOINT_PROBE(sched, sched_process_exec) {
    struct exec_key key = {};
    bpf_get_current_comm(&key.comm, sizeof(key.comm));
#if PER_USER
    key.uid = (u32)bpf_get_current_uid_gid();
#endif
    key.cgroup_id = bpf_get_current_cgroup_id();
    u64 zero = 0;
    u64 *count = execs.lookup_or_try_init(&key, &zero);
    if (count)
        (*count)++;
    else
        count_dropped(execs_dropped.lookup(DROPPED_KEY));
    return 0;
}
