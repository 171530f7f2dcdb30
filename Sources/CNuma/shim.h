// libnuma (Debian/Ubuntu: libnuma-dev). Linux only; SpoolKernels imports it under `#if os(Linux)`.
#include <numa.h>
