// Plain-function wrappers over liburing's static inline queue helpers (see CSpoolSys.h).
#include "CSpoolSys.h"
#include <errno.h>
#include <stdlib.h>

#if defined(__linux__)
#include <liburing.h>
#include <sys/uio.h>

struct spool_uring {
    struct io_uring ring;
    unsigned sqe_flags;
};

spool_uring *spool_uring_create(unsigned entries, int *error) {
    spool_uring *r = calloc(1, sizeof(*r));
    if (!r) { *error = ENOMEM; return NULL; }
    int rc = io_uring_queue_init(entries, &r->ring, 0);
    if (rc < 0) { free(r); *error = -rc; return NULL; }
    *error = 0;
    return r;
}

void spool_uring_destroy(spool_uring *r) {
    if (!r) return;
    io_uring_queue_exit(&r->ring);
    free(r);
}

int spool_uring_register_buffers(spool_uring *r, void *const *bases, const size_t *lengths, unsigned count) {
    struct iovec *iov = calloc(count ? count : 1, sizeof(*iov));
    if (!iov) return -ENOMEM;
    for (unsigned i = 0; i < count; i++) { iov[i].iov_base = bases[i]; iov[i].iov_len = lengths[i]; }
    int rc = io_uring_register_buffers(&r->ring, iov, count);
    free(iov);
    return rc;
}

int spool_uring_prep_read(spool_uring *r, int fd, void *buffer, unsigned length,
                          unsigned long long offset, unsigned long long user_data, int buffer_index) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);
    if (!sqe) return -EBUSY;
    if (buffer_index >= 0) io_uring_prep_read_fixed(sqe, fd, buffer, length, offset, buffer_index);
    else io_uring_prep_read(sqe, fd, buffer, length, offset);
    io_uring_sqe_set_data64(sqe, user_data);
    if (r->sqe_flags) io_uring_sqe_set_flags(sqe, r->sqe_flags);
    return 0;
}

void spool_uring_set_async(spool_uring *r, int on) { r->sqe_flags = on ? IOSQE_ASYNC : 0; }

int spool_uring_submit(spool_uring *r) { return io_uring_submit(&r->ring); }

static void spool_uring_take(spool_uring *r, struct io_uring_cqe *cqe, unsigned long long *user_data, int *result) {
    *user_data = io_uring_cqe_get_data64(cqe);
    *result = cqe->res;
    io_uring_cqe_seen(&r->ring, cqe);
}

int spool_uring_wait(spool_uring *r, unsigned long long *user_data, int *result) {
    struct io_uring_cqe *cqe = NULL;
    int rc = io_uring_wait_cqe(&r->ring, &cqe);
    if (rc < 0) return rc;
    spool_uring_take(r, cqe, user_data, result);
    return 0;
}

int spool_uring_peek(spool_uring *r, unsigned long long *user_data, int *result) {
    struct io_uring_cqe *cqe = NULL;
    int rc = io_uring_peek_cqe(&r->ring, &cqe);
    if (rc < 0) return rc;
    spool_uring_take(r, cqe, user_data, result);
    return 0;
}

#else
spool_uring *spool_uring_create(unsigned entries, int *error) { (void)entries; *error = ENOSYS; return NULL; }
void spool_uring_destroy(spool_uring *r) { (void)r; }
int spool_uring_register_buffers(spool_uring *r, void *const *b, const size_t *l, unsigned n) { (void)r; (void)b; (void)l; (void)n; return -ENOSYS; }
int spool_uring_prep_read(spool_uring *r, int fd, void *b, unsigned len, unsigned long long off, unsigned long long ud, int bi) {
    (void)r; (void)fd; (void)b; (void)len; (void)off; (void)ud; (void)bi; return -ENOSYS;
}
int spool_uring_submit(spool_uring *r) { (void)r; return -ENOSYS; }
void spool_uring_set_async(spool_uring *r, int on) { (void)r; (void)on; }
int spool_uring_wait(spool_uring *r, unsigned long long *u, int *res) { (void)r; (void)u; (void)res; return -ENOSYS; }
int spool_uring_peek(spool_uring *r, unsigned long long *u, int *res) { (void)r; (void)u; (void)res; return -ENOSYS; }
#endif
