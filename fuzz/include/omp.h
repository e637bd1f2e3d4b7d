/* fuzz/include/omp.h — the fuzz build compiles the C core without OpenMP (clang needs libomp for
 * -fopenmp; one thread also keeps every run deterministic): its pragmas are ignored and these
 * stand in for the runtime calls the core makes (omp_get_wtime: nn_cpu.c's per-op timing). */
#ifndef CCFG_FUZZ_OMP_H
#define CCFG_FUZZ_OMP_H
#include <time.h>
static inline int omp_get_max_threads(void) { return 1; }
static inline int omp_get_thread_num(void) { return 0; }
static inline double omp_get_wtime(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
#endif
