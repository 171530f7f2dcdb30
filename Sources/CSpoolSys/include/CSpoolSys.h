#ifndef CSPOOLSYS_H
#define CSPOOLSYS_H

/// 1 if the CPU has AVX2 and FMA and the OS saves the YMM registers (XCR0), else 0.
/// Always 0 on non-x86_64 targets.
int spool_cpu_has_avx2_fma(void);

/// Writes the CPUs this process may run on (ascending) to `out`, at most `capacity` of them, and
/// returns how many there are; -1 where unsupported (non-Linux) or on error.
int spool_allowed_cpus(int *out, int capacity);

/// Pins the calling thread to `cpu`. 0 on success, -1 where unsupported or refused.
int spool_pin_current_thread(int cpu);

/// Spin-wait hint (x86 `pause`, ARM `yield`): keeps a spinning thread from starving its
/// sibling hyperthread and saves power. Inline so a spin loop does not pay for a call.
static inline void spool_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__) || defined(__arm__)
    __asm__ __volatile__("yield");
#endif
}

/// Asks for the cache line at `p` ahead of a read (`prefetcht0` on x86, `prfm pldl1keep` on
/// AArch64); a hint only, never faults. Swift has no prefetch intrinsic (`_mm_prefetch` is a macro).
static inline void spool_prefetch(const void *p) { __builtin_prefetch(p, 0, 3); }

/// O_DIRECT (a _GNU_SOURCE constant Swift's Glibc module does not expose); 0 where unsupported.
int spool_o_direct_flag(void);

#include <stddef.h>

// ---- io_uring (liburing) --------------------------------------------------------------------
// liburing's queue helpers are static inline C built on C11 atomics; these plain functions wrap
// them so Swift sees an opaque ring and integers. Errors are returned as negative errno values
// (liburing's convention). On non-Linux targets every function fails with -ENOSYS.

/// An io_uring instance (submission and completion queues). Opaque to Swift.
typedef struct spool_uring spool_uring;

/// Creates a ring with `entries` submission slots. On failure returns NULL and stores the
/// positive errno in `*error` (EPERM when io_uring is disabled or filtered by seccomp, ENOSYS on
/// kernels without it, EINVAL for unsupported parameters, ENOMEM when locked memory is short).
spool_uring *spool_uring_create(unsigned entries, int *error);

/// Tears the ring down (unregisters buffers, unmaps the queues). NULL is ignored.
void spool_uring_destroy(spool_uring *ring);

/// Registers `count` buffers (base and length each) as fixed buffers, so reads into them skip the
/// per-I/O page pinning. 0 or -errno.
int spool_uring_register_buffers(spool_uring *ring, void *const *bases, const size_t *lengths, unsigned count);

/// Queues one read of `length` bytes at `offset` of `fd` into `buffer`. `buffer_index` >= 0 names
/// the registered buffer that contains `buffer` (a fixed read); < 0 is a plain read.
/// 0, or -EBUSY when the submission queue is full (submit, then try again).
int spool_uring_prep_read(spool_uring *ring, int fd, void *buffer, unsigned length,
                          unsigned long long offset, unsigned long long user_data, int buffer_index);

/// With `on`, reads queued from now on carry IOSQE_ASYNC: the kernel hands them to its io-wq
/// worker threads instead of issuing them inline, so io_uring_submit does not block when the
/// device queue is full (it then waits for a free request tag).
void spool_uring_set_async(spool_uring *ring, int on);

/// Hands queued reads to the kernel. The number submitted, or -errno.
int spool_uring_submit(spool_uring *ring);

/// Waits for one completion and consumes it: its user data and result (bytes read, or -errno).
/// 0, or -errno (e.g. -EINTR) from the wait itself.
int spool_uring_wait(spool_uring *ring, unsigned long long *user_data, int *result);

/// Like spool_uring_wait but never blocks: -EAGAIN when no completion is ready.
int spool_uring_peek(spool_uring *ring, unsigned long long *user_data, int *result);

/// 1 if the CPU has AVX-512 F/DQ/BW/VL and VNNI (plus AVX2, FMA, F16C) and the OS saves the opmask
/// and ZMM registers (XCR0), else 0. Always 0 on non-x86_64 targets. (cpu_avx512.c)
int spool_cpu_has_avx512_vnni(void);

#endif
