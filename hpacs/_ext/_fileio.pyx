# cython: language_level=3
"""File I/O of the ingest path without the GIL (twin: ``hpacs._ext.fileio``).

The event loop writes each received fragment itself and hands one job per instance to a thread
(fdatasync, rename, directory fsync). Each of those steps is a system call that releases the GIL
in ``os`` too, but every return re-takes it: with many associations the loop and the I/O threads
then pass the GIL back and forth several times per instance, and each hand-off costs latency. Here
a whole step list runs in one ``nogil`` block, so a thread takes the GIL once per instance.
"""

import os

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from libc.errno cimport EINTR, errno
from libc.stdlib cimport free, malloc
from posix.fcntl cimport O_CLOEXEC, O_DIRECTORY, O_RDONLY, open
from posix.unistd cimport close, fdatasync, fsync
from posix.uio cimport iovec, writev

cdef extern from "<fcntl.h>" nogil:
    """
    #ifndef SYNC_FILE_RANGE_WRITE
    #define SYNC_FILE_RANGE_WRITE 2
    #endif
    #if defined(__linux__)
    static int hpacs_sync_file_range(int fd, long long off, long long n) {
        return sync_file_range(fd, off, n, SYNC_FILE_RANGE_WRITE);
    }
    #else
    static int hpacs_sync_file_range(int fd, long long off, long long n) { return 0; }
    #endif
    """
    int hpacs_sync_file_range(int fd, long long off, long long n)

cdef extern from "<stdio.h>" nogil:
    int rename(const char *old, const char *new)

DEF IOV_MAX_ = 1024


cdef int _writev_all(int fd, iovec *iov, int count) noexcept nogil:
    """Write every byte of ``iov[:count]``, resuming after short writes; 0 or an errno."""
    cdef Py_ssize_t done
    cdef int first = 0
    cdef int batch
    while first < count:
        batch = count - first
        if batch > IOV_MAX_:
            batch = IOV_MAX_
        done = writev(fd, iov + first, batch)
        if done < 0:
            if errno == EINTR:
                continue
            return errno
        while done > 0 and first < count:
            if <size_t>done >= iov[first].iov_len:
                done -= iov[first].iov_len
                first += 1
            else:
                iov[first].iov_base = <char *>iov[first].iov_base + done
                iov[first].iov_len -= done
                done = 0
        while first < count and iov[first].iov_len == 0:
            first += 1
    return 0


def write_all(int fd, chunks):
    """Write the buffers in ``chunks`` in order; returns the byte count (OSError on failure)."""
    cdef Py_ssize_t n = len(chunks)
    cdef Py_ssize_t i, got = 0
    cdef Py_ssize_t total = 0
    cdef int err = 0
    if n == 0:
        return 0
    cdef Py_buffer *views = <Py_buffer *>malloc(n * sizeof(Py_buffer))
    cdef iovec *iov = <iovec *>malloc(n * sizeof(iovec))
    if views == NULL or iov == NULL:
        free(views)
        free(iov)
        raise MemoryError()
    try:
        for i in range(n):
            PyObject_GetBuffer(chunks[i], &views[i], PyBUF_SIMPLE)
            got += 1
            iov[i].iov_base = views[i].buf
            iov[i].iov_len = views[i].len
            total += views[i].len
        with nogil:
            err = _writev_all(fd, iov, <int>n)
    finally:
        for i in range(got):
            PyBuffer_Release(&views[i])
        free(views)
        free(iov)
    if err:
        raise OSError(err, os.strerror(err))
    return total


def start_writeback(int fd, long long offset, long long length):
    """Ask the kernel to start writing a range to disk, without waiting (Linux; else no-op)."""
    with nogil:
        hpacs_sync_file_range(fd, offset, length)


def finish_file(int fd, temp, final, directory, bint sync):
    """fdatasync (if ``sync``) and close ``fd`` (skipped if ``fd`` < 0), rename ``temp`` to
    ``final``, then fsync ``directory`` (if ``sync``) so the new name is durable. ``fd`` is
    closed in every case."""
    cdef bytes t = os.fsencode(temp)
    cdef bytes f = os.fsencode(final)
    cdef bytes d = os.fsencode(directory)
    cdef const char *tp = t
    cdef const char *fp = f
    cdef const char *dp = d
    cdef int err = 0
    cdef int step = 0
    cdef int dfd
    with nogil:
        if fd >= 0:
            if sync and fdatasync(fd) != 0:
                err = errno
                step = 1
            close(fd)
        if err == 0 and rename(tp, fp) != 0:
            err = errno
            step = 2
        if err == 0 and sync:
            dfd = open(dp, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            if dfd < 0:
                err = errno
                step = 3
            else:
                if fsync(dfd) != 0:
                    err = errno
                    step = 3
                close(dfd)
    if err:
        where = (temp, temp, final, directory)[step]
        raise OSError(err, os.strerror(err), str(where))

