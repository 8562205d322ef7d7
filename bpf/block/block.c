// block: block-device I/O per device, direction (read/write) and issuing
// cgroup: completed requests, bytes, and a histogram of
// issue-to-completion latency, from the raw tracepoints block_bio_queue,
// block_split, block_rq_issue and block_rq_complete.
//
// Raw tracepoints, not the classic ones: completions run in interrupt
// context, and the kernel skips a classic tracepoint's BPF program whenever
// any other BPF tracing program is running on that CPU (the per-CPU
// bpf_prog_active check of trace_call_bpf, counted in the program's
// recursion_misses): a completion that interrupts, say, a sched_switch
// program was lost. A raw tracepoint's program is skipped only when the
// same program is already running on that CPU. The price: a raw tracepoint
// has the tracepoint's arguments (struct request *, struct bio *), not its
// fields, so the fields are computed here as the classic tracepoint
// computes them (include/trace/events/block.h), reading the structs at
// offsets from the running kernel's BTF (btf_offsets in the manifest) and
// the request flags' bits from its enums (btf_enums):
// - dev: disk_devt(rq->q->disk), MKDEV(major, first_minor) with the
//   kernel's 20-bit minor (0 without a disk); for a bio,
//   disk_devt(bio->bi_bdev->bd_disk).
// - sector: blk_rq_pos(rq) = rq->__sector at completion; at issue
//   blk_rq_trace_sector(rq), which is 0 for an unset position (-1); for a
//   bio bio->bi_iter.bi_sector.
// - nr_sector at completion: nr_bytes >> 9, the bytes that completion
//   finished.
// - direction and rwbs: from rq->cmd_flags (bio->bi_opf), as blk_fill_rwbs().
// - error: blk_status_to_errno() of the blk_status_t (table below).
//
// What counts, so the numbers match /proc/diskstats (block/blk-mq.c,
// blk_account_io_completion/_done):
// - Only reads and writes: the request's op (cmd_flags & REQ_OP_MASK) is
//   REQ_OP_READ or REQ_OP_WRITE ('R' or 'W' in the rwbs string, after an
//   optional leading 'F' for REQ_PREFLUSH). Flushes ("FF"), discards ('D'),
//   secure erase ("DE"), write zeroes and other ops are skipped: diskstats
//   files them under its own flush/discard columns, not under reads and
//   writes.
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
// (dev, sector), what identifies an in-flight request in both events (the
// completion's sector is the request's start, blk_rq_pos). Two
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
// taken where the bio is queued (block_bio_queue, and block_split
// for the remainder of a split bio, run in the submitter's context), kept
// per (dev, sector) in an LRU hash and looked up at completion with the
// request's start sector. A request that merged
// bios of several cgroups is counted under the cgroup of its first bio.
// Direct I/O and reads are submitted by the task that does them; buffered
// writes by whoever writes the pages back: the task itself when it calls
// fsync()/fdatasync() or sync_file_range() (so those land on its
// container), the flusher kworker otherwise (the host, container.id
// empty). The kernel can charge writeback to the dirtying cgroup (cgroup v2
// io controller, the bio's blkg), which is not read here;
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


#if !defined(BTF_OFFSET_REQUEST_Q) || !defined(BTF_OFFSET_REQUEST___SECTOR) || \
    !defined(BTF_OFFSET_REQUEST_CMD_FLAGS) || !defined(BTF_OFFSET_REQUEST_QUEUE_DISK) || \
    !defined(BTF_OFFSET_GENDISK_MAJOR) || !defined(BTF_OFFSET_GENDISK_FIRST_MINOR) || \
    !defined(BTF_OFFSET_BIO_BI_BDEV) || !defined(BTF_OFFSET_BIO_BI_OPF) || \
    !defined(BTF_OFFSET_BIO_BI_ITER) || !defined(BTF_OFFSET_BVEC_ITER_BI_SECTOR) || \
    !defined(BTF_OFFSET_BLOCK_DEVICE_BD_DISK) || !defined(BTF_ENUM___REQ_FAILFAST_DEV) || \
    !defined(BTF_ENUM_REQ_OP_READ) || !defined(BTF_ENUM_REQ_OP_WRITE)
#error "block reads struct request and struct bio at offsets from the kernel's BTF (/sys/kernel/btf/vmlinux), which this kernel does not have"
#endif

// The op is the low REQ_OP_BITS bits of the flags; the first flag bit,
// __REQ_FAILFAST_DEV, is REQ_OP_BITS (include/linux/blk_types.h).
#define REQ_OP_MASK ((1u << BTF_ENUM___REQ_FAILFAST_DEV) - 1)
#define REQ_FLAG(bit) (1u << (bit))

static __always_inline u32 direction_of(u32 opf) {
    u32 op = opf & REQ_OP_MASK;
    if (op == BTF_ENUM_REQ_OP_READ)
        return DIR_READ;
    if (op == BTF_ENUM_REQ_OP_WRITE)
        return DIR_WRITE;
    return DIR_SKIP;
}

// disk_devt(disk): MKDEV(disk->major, disk->first_minor), dev_t's 20-bit
// minor; 0 for no disk, as the tracepoints write it.
static __always_inline u32 disk_devt(const void *disk) {
    int major = 0, first_minor = 0;
    if (!disk)
        return 0;
    bpf_probe_read_kernel(&major, sizeof(major), disk + BTF_OFFSET_GENDISK_MAJOR);
    bpf_probe_read_kernel(&first_minor, sizeof(first_minor), disk + BTF_OFFSET_GENDISK_FIRST_MINOR);
    return ((u32)major << 20) | (u32)first_minor;
}

static __always_inline u32 rq_dev(const void *rq) {
    void *q = 0, *disk = 0;
    bpf_probe_read_kernel(&q, sizeof(q), rq + BTF_OFFSET_REQUEST_Q);
    if (!q)
        return 0;
    bpf_probe_read_kernel(&disk, sizeof(disk), q + BTF_OFFSET_REQUEST_QUEUE_DISK);
    return disk_devt(disk);
}

static __always_inline u64 rq_pos(const void *rq) {
    u64 sector = 0;
    bpf_probe_read_kernel(&sector, sizeof(sector), rq + BTF_OFFSET_REQUEST___SECTOR);
    return sector;
}

static __always_inline u32 rq_opf(const void *rq) {
    u32 opf = 0;
    bpf_probe_read_kernel(&opf, sizeof(opf), rq + BTF_OFFSET_REQUEST_CMD_FLAGS);
    return opf;
}

// blk_status_to_errno() of Linux 6.18 (block/blk-core.c, blk_errors), as a
// positive errno: the status codes are #defines, not in BTF. Codes outside
// the table are EIO, as there. On 6.18 BLK_STS_INVAL is 19 and 18 is
// unused; later kernels close that gap (INVAL = 18) and never produce 19,
// so both map to EINVAL.
static __always_inline s32 blk_status_errno(u8 status) {
    switch (status) {
    case 0: return 0;
    case 1: return 95;    // BLK_STS_NOTSUPP: EOPNOTSUPP
    case 2: return 110;   // BLK_STS_TIMEOUT: ETIMEDOUT
    case 3: return 28;    // BLK_STS_NOSPC: ENOSPC
    case 4: return 67;    // BLK_STS_TRANSPORT: ENOLINK
    case 5: return 121;   // BLK_STS_TARGET: EREMOTEIO
    case 6: return 52;    // BLK_STS_RESV_CONFLICT: EBADE
    case 7: return 61;    // BLK_STS_MEDIUM: ENODATA
    case 8: return 84;    // BLK_STS_PROTECTION: EILSEQ
    case 9: return 12;    // BLK_STS_RESOURCE: ENOMEM
    case 10: return 5;    // BLK_STS_IOERR: EIO
    case 11: return 78;   // BLK_STS_DM_REQUEUE: EREMCHG
    case 12: return 11;   // BLK_STS_AGAIN: EAGAIN
    case 13: return 16;   // BLK_STS_DEV_RESOURCE: EBUSY
    case 14: return 109;  // BLK_STS_ZONE_OPEN_RESOURCE: ETOOMANYREFS
    case 15: return 75;   // BLK_STS_ZONE_ACTIVE_RESOURCE: EOVERFLOW
    case 16: return 19;   // BLK_STS_OFFLINE: ENODEV
    case 17: return 62;   // BLK_STS_DURATION_LIMIT: ETIME
    case 18: return 22;   // BLK_STS_INVAL after 6.18: EINVAL
    case 19: return 22;   // BLK_STS_INVAL on 6.18: EINVAL
    default: return 5;    // EIO
    }
}

// The rwbs string blk_fill_rwbs() (kernel/trace/blktrace.c) writes for the
// flags: [F]<op>[F][A][S][M][U], at most 9 characters, into rwbs[16]. The
// characters are shifted into two u64 (little-endian: the first character
// is the lowest byte) and stored at once: the verifier refuses a stack
// write at an offset computed from the flags.
#define RWBS_PUT(c)                                     \
    do {                                                \
        if (i < 8)                                      \
            lo |= (u64)(c) << (i * 8);                  \
        else                                            \
            hi |= (u64)(c) << ((i - 8) * 8);            \
        i++;                                            \
    } while (0)
static __always_inline void fill_rwbs(char *rwbs, u32 opf) {
    u32 i = 0;
    u64 lo = 0, hi = 0;
    u32 op = opf & REQ_OP_MASK;
    if (opf & REQ_FLAG(BTF_ENUM___REQ_PREFLUSH))
        RWBS_PUT('F');
    if (op == BTF_ENUM_REQ_OP_WRITE) {
        RWBS_PUT('W');
    } else if (op == BTF_ENUM_REQ_OP_DISCARD) {
        RWBS_PUT('D');
    } else if (op == BTF_ENUM_REQ_OP_SECURE_ERASE) {
        RWBS_PUT('D');
        RWBS_PUT('E');
    } else if (op == BTF_ENUM_REQ_OP_FLUSH) {
        RWBS_PUT('F');
    } else if (op == BTF_ENUM_REQ_OP_READ) {
        RWBS_PUT('R');
#ifdef BTF_ENUM_REQ_OP_ZONE_APPEND
    } else if (op == BTF_ENUM_REQ_OP_ZONE_APPEND) {
        RWBS_PUT('Z');
        RWBS_PUT('A');
    } else if (op == BTF_ENUM_REQ_OP_ZONE_RESET || op == BTF_ENUM_REQ_OP_ZONE_RESET_ALL) {
        RWBS_PUT('Z');
        RWBS_PUT('R');
        if (op == BTF_ENUM_REQ_OP_ZONE_RESET_ALL)
            RWBS_PUT('A');
    } else if (op == BTF_ENUM_REQ_OP_ZONE_FINISH) {
        RWBS_PUT('Z');
        RWBS_PUT('F');
    } else if (op == BTF_ENUM_REQ_OP_ZONE_OPEN) {
        RWBS_PUT('Z');
        RWBS_PUT('O');
    } else if (op == BTF_ENUM_REQ_OP_ZONE_CLOSE) {
        RWBS_PUT('Z');
        RWBS_PUT('C');
#endif
    } else {
        RWBS_PUT('N');
    }
    if (opf & REQ_FLAG(BTF_ENUM___REQ_FUA))
        RWBS_PUT('F');
    if (opf & REQ_FLAG(BTF_ENUM___REQ_RAHEAD))
        RWBS_PUT('A');
    if (opf & REQ_FLAG(BTF_ENUM___REQ_SYNC))
        RWBS_PUT('S');
    if (opf & REQ_FLAG(BTF_ENUM___REQ_META))
        RWBS_PUT('M');
#ifdef BTF_ENUM___REQ_ATOMIC
    if (opf & REQ_FLAG(BTF_ENUM___REQ_ATOMIC))
        RWBS_PUT('U');
#endif
    __builtin_memcpy(rwbs, &lo, sizeof(lo));
    __builtin_memcpy(rwbs + 8, &hi, sizeof(hi));
}

// The current task submits the I/O that starts at (dev, sector).
static __always_inline void record_submitter(const void *bio, u64 sector) {
    u32 opf = 0;
    bpf_probe_read_kernel(&opf, sizeof(opf), bio + BTF_OFFSET_BIO_BI_OPF);
    if (direction_of(opf) == DIR_SKIP)
        return;
    // bio_dev(bio): disk_devt(bio->bi_bdev->bd_disk)
    void *bdev = 0, *disk = 0;
    bpf_probe_read_kernel(&bdev, sizeof(bdev), bio + BTF_OFFSET_BIO_BI_BDEV);
    if (bdev)
        bpf_probe_read_kernel(&disk, sizeof(disk), bdev + BTF_OFFSET_BLOCK_DEVICE_BD_DISK);
    struct start_key key = {};
    key.dev = disk_devt(disk);
    key.sector = sector;
    u64 cgroup_id = bpf_get_current_cgroup_id();
    submitter.update(&key, &cgroup_id);
}

// args: struct bio *bio
RAW_TRACEPOINT_PROBE(block_bio_queue) {
    const void *bio = (const void *)ctx->args[0];
    u64 sector = 0;
    bpf_probe_read_kernel(&sector, sizeof(sector),
                          bio + BTF_OFFSET_BIO_BI_ITER + BTF_OFFSET_BVEC_ITER_BI_SECTOR);
    record_submitter(bio, sector);
    return 0;
}

// A bio larger than the device takes is split: the part that fits goes on,
// the remainder (from new_sector) is queued again without a second
// block_bio_queue event, so its submitter is recorded here, still in the
// submitter's context.
// args: struct bio *bio (the part that fits), unsigned int new_sector.
// new_sector is an unsigned int in the prototype, so the tracepoint's
// new_sector field holds its low 32 bits too: kept so, keys match as before.
RAW_TRACEPOINT_PROBE(block_split) {
    record_submitter((const void *)ctx->args[0], (u32)ctx->args[1]);
    return 0;
}

// args: struct request *rq
RAW_TRACEPOINT_PROBE(block_rq_issue) {
    const void *rq = (const void *)ctx->args[0];
    if (direction_of(rq_opf(rq)) == DIR_SKIP)
        return 0;
    struct start_key key = {};
    key.dev = rq_dev(rq);
    // blk_rq_trace_sector(): 0 for a request whose start was never set
    u64 sector = rq_pos(rq);
    key.sector = sector == (u64)-1 ? 0 : sector;
    u64 now = bpf_ktime_get_ns();
    start.update(&key, &now);
    return 0;
}

// args: struct request *rq, blk_status_t error, unsigned int nr_bytes
RAW_TRACEPOINT_PROBE(block_rq_complete) {
    u64 now = bpf_ktime_get_ns();
    const void *rq = (const void *)ctx->args[0];
    s32 error = blk_status_errno((u8)ctx->args[1]);
    u32 nr_sector = (u32)ctx->args[2] >> 9;
    u32 opf = rq_opf(rq);
    struct start_key skey = {};
    skey.dev = rq_dev(rq);
    skey.sector = rq_pos(rq);
    u32 direction = direction_of(opf);
    u64 *issued = start.lookup(&skey);
    u64 ts = issued ? *issued : 0;
    if (issued)
        start.delete(&skey);
    if (error) {
        struct io_error_event e = {};
        e.ktime_ns = now;
        e.dev = skey.dev;
        e.sector = skey.sector;
        e.nr_sector = nr_sector;
        e.direction = direction;
        e.error = error;
        fill_rwbs(e.rwbs, opf);
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
