// block: block-device I/O per device, direction (read/write) and issuing
// cgroup: completed requests, bytes, and a histogram of
// issue-to-completion latency, from the tracepoints block:block_bio_queue,
// block:block_rq_issue and block:block_rq_complete.
//
// What counts, so the numbers match /proc/diskstats (block/blk-mq.c,
// blk_account_io_completion/_done):
// - Only reads and writes. The op is the first letter of the tracepoint's
//   rwbs string after an optional leading 'F' (REQ_PREFLUSH): 'R' read,
//   'W' write. Flushes ("FF"), discards ('D'), secure erase ("DE"), write
//   zeroes and other ops are skipped: diskstats files them under its own
//   flush/discard columns, not under reads and writes.
// - Requests and bytes are counted at completion, as diskstats does; bytes
//   are the completion's nr_sector * 512 (the bytes that completion
//   finished). A completion with nr_sector 0 (a data-less request, e.g. an
//   empty preflush write finished by the flush machinery) is no I/O and is
//   skipped. A driver that completes one request in parts fires the
//   tracepoint once per part: bytes stay exact, the request is counted
//   once per part (diskstats counts it once). Loop, virtio and NVMe
//   complete whole requests.
// - Requests are counted whether or not their issue was seen, so requests
//   in flight when the program attached are counted too.
//
// Latency: the issue time is kept per request in an LRU hash keyed by
// (dev, sector). Tracepoint fields are all we read: without kprobes or
// kernel struct offsets there is no `struct request *` to key on, and
// (dev, sector) is what identifies an in-flight request in both events
// (the completion's sector is the request's start, blk_rq_pos). Two
// requests in flight on the same device at the same sector (rare) share an
// entry: the later issue wins and the first completion takes it. A re-issue
// (requeue) restarts the clock. Entries of requests that never complete
// (device gone, issue seen but the completion lost) are evicted by the LRU
// when the map is full, so nothing leaks; an evicted or never-seen issue
// only means that request has no latency sample (its op and bytes are
// still counted).
//
// Who issued it: the cgroup of the task that submitted the I/O, counted
// under that cgroup's container and pod. Completions run in interrupt
// context, and the request may be dispatched by a kworker, so the cgroup is
// taken where the bio is queued (block:block_bio_queue, and block:block_split
// for the remainder of a split bio, run in the submitter's context), kept
// per (dev, sector) in an LRU hash and looked up at completion with the
// request's start sector. A request that merged
// bios of several cgroups is counted under the cgroup of its first bio.
// Direct I/O and reads are submitted by the task that does them; buffered
// writes by whoever writes the pages back: the task itself when it calls
// fsync()/fdatasync() or sync_file_range() (so those land on its
// container), the flusher kworker otherwise (the host, container.id
// empty). The kernel can charge writeback to the dirtying cgroup (cgroup v2
// io controller), but reading that would need struct offsets into the bio;
// on a cgroup v1/v2 hybrid host, where blkio is a v1 controller, there is
// no v2 owner to charge at all.
#include <uapi/linux/ptrace.h>
#include <ebpfreceiver.h>

#ifndef MAX_SERIES
#define MAX_SERIES 1024
#endif
#ifndef MAX_INFLIGHT
#define MAX_INFLIGHT 10240
#endif
#ifndef HISTOGRAM_SCALE
#define HISTOGRAM_SCALE 2
#endif
// Buckets from 2^10 ns (1 µs) to 2^34 ns (17 s); slower requests land in the
// last slot. The manifest's histogram says the same.
#define MIN_LOG2 10
#define MAX_LOG2 34
#define SLOTS LATENCY_SLOTS(HISTOGRAM_SCALE, MIN_LOG2, MAX_LOG2)
#define DIRECTIONS 2

#define DIR_READ 0
#define DIR_WRITE 1
#define DIR_SKIP 255

struct start_key {
    u32 dev; // kernel dev_t: major << 20 | minor
    u32 pad;
    u64 sector;
};

struct io_key {
    u64 cgroup_id; // cgroup v2 of the submitter; 0 when the submission was not seen
    u32 dev;
    u32 direction; // DIR_READ or DIR_WRITE
};

struct io_value {
    u64 ops;
    u64 bytes;
};

struct latency_key {
    u64 cgroup_id;
    u32 dev;
    u32 direction;
    u32 slot;
};

struct latency_value {
    u64 count;
    u64 sum_ns;
};

// Events: one ebpf.block.io_error per request that completes with an error
// (block_rq_complete's error, the kernel's -errno), with its device,
// direction, sector and the submitter's cgroup.
struct io_error_event {
    u64 ktime_ns;
    u64 cgroup_id;
    u64 sector;
    u32 dev;
    u32 nr_sector;
    u32 direction;
    s32 error;      // a positive errno (EIO, ENOSPC, ...)
    char rwbs[16];  // the kernel's request flags, e.g. "WS"
};

BPF_RINGBUF_OUTPUT(io_error_events, 16);  // pages: 64 KiB
BPF_ARRAY(io_error_events_dropped, u64, 1);

BPF_TABLE("lru_hash", struct start_key, u64, start, MAX_INFLIGHT);
// The submitter's cgroup of each queued bio, by (dev, sector).
BPF_TABLE("lru_hash", struct start_key, u64, submitter, MAX_INFLIGHT);
BPF_PERCPU_HASH(disk_io, struct io_key, struct io_value, MAX_SERIES);
BPF_PERCPU_ARRAY(disk_io_dropped, u64, 1);
// Shared by all CPUs (a per-CPU hash would take its SLOTS per series once
// per CPU), so the counts are added atomically.
BPF_HASH(disk_latency, struct latency_key, struct latency_value, MAX_SERIES * SLOTS);
BPF_PERCPU_ARRAY(disk_latency_dropped, u64, 1);

// rwbs as blk_fill_rwbs() writes it: [F]<op letter>[F][A][S][M]...
static __always_inline u32 direction_of(const char *rwbs) {
    char op = rwbs[0];
    if (op == 'F')
        op = rwbs[1];
    if (op == 'R')
        return DIR_READ;
    if (op == 'W')
        return DIR_WRITE;
    return DIR_SKIP;
}

// The current task submits the I/O that starts at (dev, sector).
static __always_inline void record_submitter(u32 dev, u64 sector, const char *rwbs_field) {
    char rwbs[2] = {rwbs_field[0], rwbs_field[1]};
    if (direction_of(rwbs) == DIR_SKIP)
        return;
    struct start_key key = {};
    key.dev = dev;
    key.sector = sector;
    u64 cgroup_id = bpf_get_current_cgroup_id();
    submitter.update(&key, &cgroup_id);
}

TRACEPOINT_PROBE(block, block_bio_queue) {
    record_submitter(args->dev, args->sector, args->rwbs);
    return 0;
}

// A bio larger than the device takes is split: the part that fits goes on,
// the remainder (from new_sector) is queued again without a second
// block_bio_queue event, so its submitter is recorded here, still in the
// submitter's context.
TRACEPOINT_PROBE(block, block_split) {
    record_submitter(args->dev, args->new_sector, args->rwbs);
    return 0;
}

TRACEPOINT_PROBE(block, block_rq_issue) {
    char rwbs[2] = {args->rwbs[0], args->rwbs[1]};
    if (direction_of(rwbs) == DIR_SKIP)
        return 0;
    struct start_key key = {};
    key.dev = args->dev;
    key.sector = args->sector;
    u64 now = bpf_ktime_get_ns();
    start.update(&key, &now);
    return 0;
}

TRACEPOINT_PROBE(block, block_rq_complete) {
    u64 now = bpf_ktime_get_ns();
    struct start_key skey = {};
    skey.dev = args->dev;
    skey.sector = args->sector;
    char rwbs[2] = {args->rwbs[0], args->rwbs[1]};
    u32 direction = direction_of(rwbs);
    u64 *issued = start.lookup(&skey);
    u64 ts = issued ? *issued : 0;
    if (issued)
        start.delete(&skey);
    u32 nr_sector = args->nr_sector;
    if (args->error) {
        struct io_error_event e = {};
        e.ktime_ns = now;
        e.dev = skey.dev;
        e.sector = skey.sector;
        e.nr_sector = nr_sector;
        e.direction = direction;
        e.error = -args->error;
        bpf_probe_read_kernel(&e.rwbs, sizeof(args->rwbs), args->rwbs);
        u64 *by = submitter.lookup(&skey);
        e.cgroup_id = by ? *by : 0;
        if (io_error_events.ringbuf_output(&e, sizeof(e), 0))
            count_dropped_shared(io_error_events_dropped.lookup(DROPPED_KEY));
    }
    if (direction == DIR_SKIP || nr_sector == 0)
        return 0;
    u64 *queued_by = submitter.lookup(&skey);
    u64 cgroup_id = queued_by ? *queued_by : 0;
    if (queued_by)
        submitter.delete(&skey);

    struct io_key key = {};
    key.cgroup_id = cgroup_id;
    key.dev = skey.dev;
    key.direction = direction;
    struct io_value empty = {};
    struct io_value *io = disk_io.lookup_or_try_init(&key, &empty);
    if (io) {
        io->ops++;
        io->bytes += (u64)nr_sector << 9;
    } else {
        count_dropped(disk_io_dropped.lookup(DROPPED_KEY));
    }

    if (ts == 0 || now < ts)
        return 0;
    u64 delta = now - ts;
    struct latency_key lkey = {};
    lkey.cgroup_id = cgroup_id;
    lkey.dev = key.dev;
    lkey.direction = direction;
    lkey.slot = latency_slot(delta, HISTOGRAM_SCALE, MIN_LOG2, MAX_LOG2);
    struct latency_value lempty = {};
    struct latency_value *lat = disk_latency.lookup_or_try_init(&lkey, &lempty);
    if (lat) {
        __sync_fetch_and_add(&lat->count, 1);
        __sync_fetch_and_add(&lat->sum_ns, delta);
    } else {
        count_dropped(disk_latency_dropped.lookup(DROPPED_KEY));
    }
    return 0;
}
