/* fuzz/include/omp.h — the fuzz build compiles the C core without OpenMP (clang needs libomp for
 * -fopenmp; one thread also keeps every run deterministic): its pragmas are ignored and these
 * stand in for the two runtime calls the core makes. */
#ifndef CCFG_FUZZ_OMP_H
#define CCFG_FUZZ_OMP_H
static inline int omp_get_max_threads(void) { return 1; }
static inline int omp_get_thread_num(void) { return 0; }
#endif
