// process: processes created and processes exited, per process name.
//
// Created: the tracepoint task:task_newtask, which copy_process() fires once
// per new task, in the parent's context, after the point where the fork can
// no longer fail (next to the kernel's own total_forks++), with the clone
// flags as a field. A task created with CLONE_THREAD is a thread of the
// parent's process and is not counted; everything else (fork, vfork, clone
// and clone3 without CLONE_THREAD, kernel threads) is a new process.
// sched:sched_process_fork is not used: it fires for threads too and has no
// field that tells them apart without reading task_struct.
//
// Exited: the tracepoint sched:sched_process_exit, which fires once per
// exiting thread in that thread's context. Only the thread group leader
// (thread id == process id, from bpf_get_current_pid_tgid()) is counted, so
// each process counts once however many threads it had.
#include <uapi/linux/ptrace.h>
#include <ebpfreceiver.h>

#ifndef MAX_ENTRIES
#define MAX_ENTRIES 4096
#endif
#define THREAD_FLAG 0x00010000 // CLONE_THREAD from uapi/linux/sched.h

struct name_key {
    char comm[EBPF_COMM_LEN];
};

BPF_PERCPU_HASH(processes_created, struct name_key, u64, MAX_ENTRIES);
BPF_PERCPU_ARRAY(processes_created_dropped, u64, 1);
BPF_PERCPU_HASH(processes_exited, struct name_key, u64, MAX_ENTRIES);
BPF_PERCPU_ARRAY(processes_exited_dropped, u64, 1);

TRACEPOINT_PROBE(task, task_newtask) {
    if (args->clone_flags & THREAD_FLAG)
        return 0;
    struct name_key key = {};
    bpf_get_current_comm(&key.comm, sizeof(key.comm)); // the creating process
    u64 zero = 0;
    u64 *count = processes_created.lookup_or_try_init(&key, &zero);
    if (count)
        (*count)++;
    else
        count_dropped(processes_created_dropped.lookup(DROPPED_KEY));
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exit) {
    u64 id = bpf_get_current_pid_tgid();
    if ((u32)id != (u32)(id >> 32))
        return 0; // a thread other than the leader
    struct name_key key = {};
    bpf_get_current_comm(&key.comm, sizeof(key.comm));
    u64 zero = 0;
    u64 *count = processes_exited.lookup_or_try_init(&key, &zero);
    if (count)
        (*count)++;
    else
        count_dropped(processes_exited_dropped.lookup(DROPPED_KEY));
    return 0;
}
