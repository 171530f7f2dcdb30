// liburing (Debian: liburing-dev). Swift code does not import this module directly: liburing's
// queue helpers are `static inline` functions built on C11 atomics, so they are wrapped by plain
// functions in CSpoolSys (spool_uring_*), which depends on this target for the header and the
// `-luring` link.
#if defined(__linux__)
#include <liburing.h>
#endif
