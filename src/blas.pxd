# blas.pxd: row-major GEMM on top of scipy's column-major Fortran BLAS, callable without the GIL.
from cython cimport floating
from scipy.linalg.cython_blas cimport sgemm, dgemm


cdef inline void gemm_nt(int M, int N, int K,
                         const floating *A, int lda,     # IN READ-ONLY (M, K) row-major
                         const floating *B, int ldb,     # IN READ-ONLY (N, K) row-major
                         floating beta,
                         floating *C, int ldc            # OUT (M, N) row-major: C = A @ B.T + beta * C
                         ) noexcept nogil:
    # Column-major view: C.T (N, M) = B (N, K) @ A.T (K, M); B is stored as B.T, hence 'T', 'N'.
    cdef char transa = b'T'
    cdef char transb = b'N'
    cdef floating alpha = 1
    if floating is float:
        sgemm(&transa, &transb, &N, &M, &K, &alpha, <float *> B, &ldb, <float *> A, &lda, &beta, C, &ldc)
    else:
        dgemm(&transa, &transb, &N, &M, &K, &alpha, <double *> B, &ldb, <double *> A, &lda, &beta, C, &ldc)
