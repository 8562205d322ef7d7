// oom: processes killed by the OOM killer, per victim process name, from the
// tracepoint oom:mark_victim. It fires once per kill, when the killer marks
// its victim, which is the same point where the kernel counts the kill
// (oom_kill in /proc/vmstat and memory.events).
//
// The killer usually runs in the context of whatever task failed to allocate,
// not the victim, so the victim's name comes from the tracepoint's own comm
// field (a __data_loc string, read with BCC's TP_DATA_LOC_READ_STR) rather
// than bpf_get_current_comm(). The field was added in 2024 (Linux 6.1 has
// only pid); where it is missing (the sidecar defines TP_MARK_VICTIM_HAS_COMM
// from tracefs) kills are still counted, under an empty name.
//
// Events: one ebpf.oom.kill per kill into the ring buffer oom_events. The
// classic tracepoint has the victim's pid, name and resident memory; only
// the raw tracepoint on the same hook has the victim's task (its cgroup:
// container.id, k8s.pod.uid). The kernel calls both, one after the other on
// the same CPU with preemption off, in the order they were attached: each
// leaves its half in a per-CPU scratch slot, and whichever comes second finds
// the other half (same pid) and sends the whole event.
//
// cgroup or global: the killer (current) reclaimed memory just before it
// gave up and called the OOM killer, either a memory cgroup's
// (vmscan:mm_vmscan_memcg_reclaim_begin, from the charge path of a cgroup
// at its limit) or the zone's (vmscan:mm_vmscan_direct_reclaim_begin, from
// the page allocator): the kind of its latest reclaim, kept per thread,
// says which OOM it is.
#include <uapi/linux/ptrace.h>
#include <ebpfreceiver.h>

#ifndef MAX_ENTRIES
#define MAX_ENTRIES 1024
#endif

struct victim_key {
    char comm[EBPF_COMM_LEN];
};

BPF_HASH(oom_kills, struct victim_key, u64, MAX_ENTRIES);
BPF_ARRAY(oom_kills_dropped, u64, 1);

// constraint: what the killer last reclaimed from
#define RECLAIM_DIRECT 1
#define RECLAIM_MEMCG 2

struct oom_event {
    u64 ktime_ns;
    u64 cgroup_id;    // the victim's cgroup v2 id
    u64 rss_bytes;    // anonymous + file + shmem
    u64 anon_rss_bytes;
    u64 file_rss_bytes;
    u64 shmem_rss_bytes;
    u32 pid;          // the victim's process id
    u32 killer_pid;   // the process that ran the OOM killer
    u32 uid;
    s32 oom_score_adj;
    char comm[EBPF_COMM_LEN];
    char killer_comm[EBPF_COMM_LEN];
    u8 constraint;    // RECLAIM_*: memcg = cgroup limit, direct = global, 0 = unknown
    u8 halves;        // scratch only: 1 = tracepoint half, 2 = raw half
};

BPF_RINGBUF_OUTPUT(oom_events, 4);  // pages: 16 KiB, a hundred kills
BPF_ARRAY(oom_events_dropped, u64, 1);
BPF_PERCPU_ARRAY(oom_scratch, struct oom_event, 1);
BPF_TABLE("lru_hash", u32, u8, last_reclaim, 4096);  // thread id -> RECLAIM_*

static __always_inline void note_reclaim(u8 kind) {
    u32 tid = bpf_get_current_pid_tgid();
    last_reclaim.update(&tid, &kind);
}

TRACEPOINT_PROBE(vmscan, mm_vmscan_direct_reclaim_begin) {
    note_reclaim(RECLAIM_DIRECT);
    return 0;
}

TRACEPOINT_PROBE(vmscan, mm_vmscan_memcg_reclaim_begin) {
    note_reclaim(RECLAIM_MEMCG);
    return 0;
}

// The scratch slot with this half of the event merged in: a slot holding
// the other half of the same pid is kept, anything else starts afresh.
static __always_inline struct oom_event *oom_half(u32 pid, u8 half) {
    struct oom_event *e = oom_scratch.lookup(DROPPED_KEY);
    if (!e)
        return 0;
    if (e->pid != pid || !(e->halves & (3 - half)) || (e->halves & half)) {
        __builtin_memset(e, 0, sizeof(*e));
        e->pid = pid;
    }
    e->halves |= half;
    return e;
}

#ifdef BTF_OFFSET_TASK_STRUCT_TGID
#define OOM_WHOLE 3
// args: struct task_struct *task, uid_t uid
RAW_TRACEPOINT_PROBE(mark_victim) {
    void *task = (void *)ctx->args[0];
    u32 pid = 0;
    bpf_probe_read_kernel(&pid, sizeof(pid), task + BTF_OFFSET_TASK_STRUCT_TGID);
    struct oom_event *e = oom_half(pid, 2);
    if (!e)
        return 0;
    e->cgroup_id = task_cgroup_id(task);
    if (e->halves == OOM_WHOLE) {
        if (oom_events.ringbuf_output(e, sizeof(*e), 0))
            count_dropped_shared(oom_events_dropped.lookup(DROPPED_KEY));
        e->halves = 0;
    }
    return 0;
}
#else
// Without the running kernel's BTF the victim's task cannot be read: the
// tracepoint's half is the whole event, without container or pod.
#define OOM_WHOLE 1
#endif

TRACEPOINT_PROBE(oom, mark_victim) {
    struct victim_key key = {};
#ifdef TP_MARK_VICTIM_HAS_COMM
    TP_DATA_LOC_READ_STR(key.comm, comm, sizeof(key.comm));
#endif
    struct oom_event *e = oom_half(args->pid, 1);
    if (e) {
        e->ktime_ns = bpf_ktime_get_ns();
        __builtin_memcpy(e->comm, key.comm, sizeof(e->comm));
#ifdef TP_MARK_VICTIM_HAS_ANON_RSS
        // the tracepoint has them in KiB
        e->anon_rss_bytes = (u64)args->anon_rss << 10;
        e->file_rss_bytes = (u64)args->file_rss << 10;
        e->shmem_rss_bytes = (u64)args->shmem_rss << 10;
        e->rss_bytes = e->anon_rss_bytes + e->file_rss_bytes + e->shmem_rss_bytes;
#endif
#ifdef TP_MARK_VICTIM_HAS_OOM_SCORE_ADJ
        e->oom_score_adj = args->oom_score_adj;
#endif
#ifdef TP_MARK_VICTIM_HAS_UID
        e->uid = args->uid;
#endif
        u64 id = bpf_get_current_pid_tgid();
        u32 tid = id;
        e->killer_pid = id >> 32;
        bpf_get_current_comm(&e->killer_comm, sizeof(e->killer_comm));
        u8 *kind = last_reclaim.lookup(&tid);
        e->constraint = kind ? *kind : 0;
        if (e->halves == OOM_WHOLE) {
            if (oom_events.ringbuf_output(e, sizeof(*e), 0))
                count_dropped_shared(oom_events_dropped.lookup(DROPPED_KEY));
            e->halves = 0;
        }
    }
    u64 zero = 0;
    // OOM kills are rare and may come from any CPU: a shared map with atomic
    // adds is cheap enough and keeps the count in one place.
    u64 *count = oom_kills.lookup_or_try_init(&key, &zero);
    if (count)
        __sync_fetch_and_add(count, 1);
    else
        count_dropped_shared(oom_kills_dropped.lookup(DROPPED_KEY));
    return 0;
}
