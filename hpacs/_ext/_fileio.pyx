# cython: language_level=3
"""File I/O of the ingest path without the GIL (twin: ``hpacs._ext.fileio``).

The event loop writes each received fragment itself and hands one job per instance to a thread
(fdatasync, rename, directory fsync). Each of those steps is a system call that releases the GIL
in ``os`` too, but every return re-takes it: with many associations the loop and the I/O threads
then pass the GIL back and forth several times per instance, and each hand-off costs latency. Here
a whole step list runs in one ``nogil`` block, so a thread takes the GIL once per instance.

``Committer`` goes one step further: its threads are plain C threads that never take the GIL at
all, fed through a mutex-protected list (``submit`` wakes one with a condition variable instead
of an executor's ``SimpleQueue.put`` + Python thread) and answering through an eventfd the event
loop watches, written once per batch of completions.

``Committer.stream(fd)`` also takes the data writes off the loop: each received chunk becomes one
write job (``pwritev`` at its offset, plus the ``sync_file_range`` of the range it completes), so
the event loop no longer spends the page-cache copy (~0.25 ms of kernel time per 526 KB slice).
The job holds the Python buffers (``PyObject_GetBuffer``) until the loop takes its completion
back in ``drain`` (releasing a buffer needs the GIL); write completions do not wake the loop on
their own, the file's commit does. The file's commit (or discard) is held back until its last
write finished, and a failed write fails the commit.
"""

import os

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from libc.errno cimport EINTR, errno
from libc.stdlib cimport calloc, free, malloc
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec
from posix.fcntl cimport O_CLOEXEC, O_CREAT, O_DIRECTORY, O_EXCL, O_RDONLY, O_WRONLY, open
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

cdef extern from "<sys/uio.h>" nogil:
    Py_ssize_t pwritev(int fd, const iovec *iov, int iovcnt, long long offset)

DEF IOV_MAX_ = 1024
#: Written bytes whose buffers may wait for the loop's next drain before the writer wakes it.
DEF HELD_MAX = 16 << 20


cdef inline int _advance(iovec *iov, int first, int count, Py_ssize_t done) noexcept nogil:
    """After ``done`` more bytes went out from ``iov[first:count]``: the index of the first
    iovec not fully written (a partly written one is trimmed in place; empty ones skipped)."""
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
    return first


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
        first = _advance(iov, first, count, done)
    return 0


cdef int _pwritev_all(int fd, iovec *iov, int count, long long offset) noexcept nogil:
    """``_writev_all`` at an explicit file offset (writes of one file may run on several
    threads); 0 or an errno."""
    cdef Py_ssize_t done
    cdef int first = 0
    cdef int batch
    while first < count and iov[first].iov_len == 0:  # nothing to write: no system call
        first += 1
    while first < count:
        batch = count - first
        if batch > IOV_MAX_:
            batch = IOV_MAX_
        done = pwritev(fd, iov + first, batch, offset)
        if done < 0:
            if errno == EINTR:
                continue
            return errno
        offset += done
        first = _advance(iov, first, count, done)
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


# -- the commit queue: C threads that never take the GIL ---------------------------------------

cdef extern from "<pthread.h>" nogil:
    ctypedef unsigned long pthread_t
    ctypedef struct pthread_mutex_t:
        pass
    ctypedef struct pthread_cond_t:
        pass
    int pthread_create(pthread_t *thread, const void *attr,
                       void *(*start)(void *) noexcept nogil, void *arg)
    int pthread_join(pthread_t thread, void **retval)
    pthread_t pthread_self()
    int pthread_setname_np(pthread_t thread, const char *name)
    int pthread_mutex_init(pthread_mutex_t *m, const void *attr)
    int pthread_mutex_destroy(pthread_mutex_t *m)
    int pthread_mutex_lock(pthread_mutex_t *m)
    int pthread_mutex_unlock(pthread_mutex_t *m)
    int pthread_cond_init(pthread_cond_t *c, const void *attr)
    int pthread_cond_destroy(pthread_cond_t *c)
    int pthread_cond_wait(pthread_cond_t *c, pthread_mutex_t *m)
    int pthread_cond_signal(pthread_cond_t *c)
    int pthread_cond_broadcast(pthread_cond_t *c)

cdef extern from "<sys/eventfd.h>" nogil:
    int eventfd(unsigned int initval, int flags)
    int EFD_NONBLOCK
    int EFD_CLOEXEC

cdef extern from "<unistd.h>" nogil:
    Py_ssize_t c_read "read"(int fd, void *buf, size_t n)
    Py_ssize_t c_write "write"(int fd, const void *buf, size_t n)
    int dup(int fd)
    int unlink(const char *path)

cdef extern from "<string.h>" nogil:
    char *strdup(const char *s)

ctypedef unsigned long long u64


cdef inline double _now() noexcept nogil:
    """CLOCK_MONOTONIC in seconds: the clock of Python's ``time.monotonic`` (the tracer's)."""
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <double>ts.tv_sec + <double>ts.tv_nsec * 1e-9


cdef int _finish(int fd, const char *tp, const char *fp, const char *dp, bint sync,
                 int *step, double *synced) noexcept nogil:
    """The steps of ``finish_file``; 0 or an errno, ``step`` says which one failed (1 fdatasync,
    2 rename, 3 directory fsync). ``synced`` (if not NULL) gets the time the fdatasync ended."""
    cdef int err = 0
    cdef int dfd
    step[0] = 0
    if fd >= 0:
        if sync and fdatasync(fd) != 0:
            err = errno
            step[0] = 1
        close(fd)
    if synced != NULL:
        synced[0] = _now()
    if err == 0 and rename(tp, fp) != 0:
        err = errno
        step[0] = 2
    if err == 0 and sync:
        dfd = open(dp, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dfd < 0:
            err = errno
            step[0] = 3
        else:
            if fsync(dfd) != 0:
                err = errno
                step[0] = 3
            close(dfd)
    return err


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
    cdef int err
    cdef int step = 0
    with nogil:
        err = _finish(fd, tp, fp, dp, sync, &step, NULL)
    if err:
        where = (temp, temp, final, directory)[step]
        raise OSError(err, os.strerror(err), str(where))


cdef enum:
    JOB_COMMIT = 0  # finish_file; completion reported
    JOB_WRITEBACK = 1  # a sync_file_range of (fd, offset, length) only: no completion
    JOB_WRITE = 2  # pwritev of a stream's buffers at offset, then an optional writeback
    JOB_DISCARD = 3  # close a stream's fd and unlink its temp file; not reported
    JOB_DATASYNC = 4  # fdatasync of a stream's fd ahead of its commit; not reported


cdef struct FileState:
    int pending  # write (or early datasync) jobs of the file queued or running
    int err  # the first write (or open) error
    Job *deferred_head  # jobs waiting for pending == 0, in order: datasync, commit/discard
    Job *deferred_tail
    int fd  # -1 until the writer thread opened ``path``
    char *path  # a stream made by ``stream_at``: created by its first write job; else NULL
    double t_written  # traced: when its last write ended
    double t_presynced  # traced: when its early fdatasync ended


cdef void _free_state(FileState *f) noexcept nogil:
    if f != NULL:
        free(f.path)
        free(f)


cdef struct Job:
    Job *next
    int kind
    long long offset
    long long length
    long long token
    int fd
    bint sync
    char *temp
    char *final
    char *directory
    int err
    int step
    FileState *file
    Py_buffer *views  # JOB_WRITE: released by drain (under the GIL)
    iovec *iov
    int count
    long long wb_offset
    long long wb_length
    double t_start  # traced (a commit): when a thread took it
    double t_synced  # traced: when its fdatasync ended
    double t_done  # traced: when its directory fsync ended


cdef void _free_job(Job *job) noexcept nogil:
    free(job.temp)
    free(job.final)
    free(job.directory)
    free(job.iov)
    free(job)


cdef void _release_job(Job *job) noexcept:
    """Free a finished job, releasing the buffers a write job held (needs the GIL)."""
    cdef int i
    if job.views != NULL:
        for i in range(job.count):
            PyBuffer_Release(&job.views[i])
        free(job.views)
    _free_job(job)


cdef struct Shared:
    pthread_mutex_t lock
    pthread_cond_t work
    Job *todo_head
    Job *todo_tail
    Job *done_head
    Job *done_tail
    bint notified  # the eventfd was written since the loop last took the completions
    bint stopping
    int efd
    long long pending_bytes  # bytes of write jobs not written yet
    long long held_bytes  # bytes of written jobs whose buffers wait for a drain
    # the write jobs, for the one writer thread: writes of one file never run on two threads
    # at once (they would contend for the inode lock, spinning), and a slow fdatasync never
    # holds a write back
    pthread_cond_t wwork
    Job *wtodo_head
    Job *wtodo_tail
    bint wstopping
    bint trace  # time the steps of every stream's commit (Committer.trace)


cdef inline void _append_todo(Shared *s, Job *job) noexcept nogil:
    job.next = NULL
    if s.todo_tail == NULL:
        s.todo_head = job
    else:
        s.todo_tail.next = job
    s.todo_tail = job


cdef inline void _append_done(Shared *s, Job *job) noexcept nogil:
    job.next = NULL
    if s.done_tail == NULL:
        s.done_head = job
    else:
        s.done_tail.next = job
    s.done_tail = job


cdef inline Job *_pop(Job **head, Job **tail) noexcept nogil:
    """(Lock held.) The first job of a queue, taken off it; NULL when the queue is empty."""
    cdef Job *job = head[0]
    if job != NULL:
        head[0] = job.next
        if head[0] == NULL:
            tail[0] = NULL
    return job


cdef inline void _wake(Shared *s) noexcept nogil:
    """(Lock not held.) Make the eventfd readable: the loop drains the completions."""
    cdef u64 one = 1
    while c_write(s.efd, &one, 8) < 0 and errno == EINTR:
        pass


cdef void _defer_or_queue(Shared *s, FileState *f, Job *job) noexcept nogil:
    """(Lock held.) Queue ``job`` to the commit threads once ``f`` has nothing pending and
    nothing deferred before it."""
    if f.pending > 0 or f.deferred_head != NULL:
        job.next = NULL
        if f.deferred_tail == NULL:
            f.deferred_head = job
        else:
            f.deferred_tail.next = job
        f.deferred_tail = job
        return
    if job.kind == JOB_DATASYNC:
        f.pending += 1  # the commit waits for it
    _append_todo(s, job)
    pthread_cond_signal(&s.work)


cdef Job *_settled(Shared *s, FileState *f, bint take) noexcept nogil:
    """(Lock held.) One job of ``f`` finished: release what was waiting for it. With ``take``
    the released job is returned for the calling thread to run next (NULL if none) instead of
    being queued: a thread just done with the file's previous step is awake already, while a
    queued job costs the wake-up of another one (and, taken by the caller anyway, a wasted
    one)."""
    cdef Job *job
    f.pending -= 1
    if f.pending == 0 and f.deferred_head != NULL:
        job = f.deferred_head
        f.deferred_head = job.next
        if f.deferred_head == NULL:
            f.deferred_tail = NULL
        if job.kind == JOB_DATASYNC:
            f.pending += 1  # what is deferred behind it waits for it in turn
        if take:
            job.next = NULL
            return job
        _append_todo(s, job)
        pthread_cond_signal(&s.work)
    return NULL


cdef void _run(Shared *s, Job *job) noexcept nogil:
    """Run one job of the commit queue, then whatever of the same file it releases (the
    file's commit after its early fdatasync), on this thread.

    The writer thread does not take them (tried: on one association, the writer running the
    file's fdatasync and commit itself instead of waking a commit thread made its writes of
    the next data set later, 0.38-0.43 against 0.44-0.46 ms from the last fragment, in
    interleaved timelines; no gain on the chain)."""
    cdef bint notify
    cdef int err
    cdef Job *nxt
    while job != NULL:
        err = 0
        if job.file != NULL:  # a stream's job: its fd is known once its writes are done
            pthread_mutex_lock(&s.lock)
            err = job.file.err
            job.fd = job.file.fd
            pthread_mutex_unlock(&s.lock)

        if job.kind == JOB_WRITEBACK:
            hpacs_sync_file_range(job.fd, job.offset, job.length)
            close(job.fd)
            _free_job(job)
            return
        if job.kind == JOB_DATASYNC:
            if err == 0 and job.fd >= 0:  # a failure only loses the head start
                fdatasync(job.fd)
            if s.trace:
                job.file.t_presynced = _now()
            pthread_mutex_lock(&s.lock)
            nxt = _settled(s, job.file, True)
            pthread_mutex_unlock(&s.lock)
            _free_job(job)
            job = nxt
            continue
        if err:  # a write (or the open) of this file failed: nothing to commit
            if job.fd >= 0:
                close(job.fd)
            if job.kind == JOB_DISCARD:
                unlink(job.temp)
            job.err = err
            job.step = 0
        elif job.kind == JOB_DISCARD:
            if job.fd >= 0:
                close(job.fd)
            unlink(job.temp)
        elif s.trace:
            job.t_start = _now()
            job.err = _finish(job.fd, job.temp, job.final, job.directory, job.sync, &job.step,
                              &job.t_synced)
            job.t_done = _now()
        else:
            job.err = _finish(job.fd, job.temp, job.final, job.directory, job.sync, &job.step,
                              NULL)
        job.fd = -1

        pthread_mutex_lock(&s.lock)
        _append_done(s, job)
        notify = not s.notified
        s.notified = True
        pthread_mutex_unlock(&s.lock)
        if notify:  # one wake-up of the loop per batch of completions
            _wake(s)
        return


cdef void *_worker(void *arg) noexcept nogil:
    cdef Shared *s = <Shared *>arg
    cdef Job *job
    pthread_setname_np(pthread_self(), "hpacs-commit")  # for top, perf and the CPU split
    while True:
        pthread_mutex_lock(&s.lock)
        while s.todo_head == NULL and not s.stopping:
            pthread_cond_wait(&s.work, &s.lock)
        job = _pop(&s.todo_head, &s.todo_tail)
        pthread_mutex_unlock(&s.lock)
        if job == NULL:  # stopping, and nothing left to do
            return NULL
        _run(s, job)


cdef void *_writer(void *arg) noexcept nogil:
    cdef Shared *s = <Shared *>arg
    cdef Job *job
    cdef FileState *f
    cdef int err
    cdef bint notify
    pthread_setname_np(pthread_self(), "hpacs-commit-w")
    while True:
        pthread_mutex_lock(&s.lock)
        while s.wtodo_head == NULL and not s.wstopping:
            pthread_cond_wait(&s.wwork, &s.lock)
        job = _pop(&s.wtodo_head, &s.wtodo_tail)
        if job == NULL:  # stopping, and nothing left to write
            pthread_mutex_unlock(&s.lock)
            return NULL
        f = job.file
        err = f.err
        pthread_mutex_unlock(&s.lock)

        if err == 0 and f.fd < 0 and f.path != NULL:  # the first write creates the file
            # (only this thread sets f.fd; the commit threads read it after a locked hand-off)
            f.fd = open(f.path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
            if f.fd < 0:
                err = errno
        job.fd = f.fd
        if err == 0:  # after a failed write (or open), later ones are skipped
            err = _pwritev_all(job.fd, job.iov, job.count, job.offset)
            if err == 0 and job.wb_length > 0:
                hpacs_sync_file_range(job.fd, job.wb_offset, job.wb_length)
        if s.trace:
            f.t_written = _now()
        pthread_mutex_lock(&s.lock)
        if err and f.err == 0:
            f.err = err
        s.pending_bytes -= job.length
        _settled(s, f, False)  # a released fdatasync or commit goes to a commit thread
        job.file = NULL
        _append_done(s, job)  # its buffers go back at the next drain
        s.held_bytes += job.length
        # no wake-up of its own (the file's commit brings one), unless the buffers add up:
        # a data set of gigabytes must not stay in memory until its commit
        notify = s.held_bytes >= HELD_MAX and not s.notified
        if notify:
            s.notified = True
        pthread_mutex_unlock(&s.lock)
        if notify:
            _wake(s)


cdef class Stream


cdef class Committer:
    """``finish_file`` jobs run by ``threads`` C threads that never take the GIL.

    ``submit`` queues a job (no thread of Python's is woken, no GIL hand-off); a finished job
    lands in a completion list and, if that list was empty, the eventfd ``fileno()`` becomes
    readable: the event loop watches it and calls ``drain()``, which returns every completion
    so far as ``(token, None)`` or ``(token, OSError)`` (the error ``finish_file`` raises).
    ``close()`` finishes every queued job, then stops the threads.
    """

    cdef Shared s
    cdef pthread_t *threads
    cdef int nthreads
    cdef pthread_t wthread
    cdef bint wstarted
    cdef bint closed
    #: With ``trace`` on: (token, last write ended, early fdatasync ended, commit taken by a
    #: thread, its fdatasync ended, directory fsync ended) per stream commit drained, in
    #: ``time.monotonic`` seconds (0.0: no such step). The caller empties it.
    cdef public list traces

    def __cinit__(self, int threads=4):
        self.traces = []
        self.s.trace = False

        if threads < 1:
            raise ValueError("threads must be >= 1")
        pthread_mutex_init(&self.s.lock, NULL)
        pthread_cond_init(&self.s.work, NULL)
        pthread_cond_init(&self.s.wwork, NULL)
        self.s.wtodo_head = self.s.wtodo_tail = NULL
        self.s.wstopping = False
        self.wstarted = False
        self.s.todo_head = self.s.todo_tail = NULL
        self.s.done_head = self.s.done_tail = NULL
        self.s.notified = False
        self.s.stopping = False
        self.nthreads = 0
        self.s.efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)
        if self.s.efd < 0:
            raise OSError(errno, os.strerror(errno))
        self.threads = <pthread_t *>malloc(threads * sizeof(pthread_t))
        if self.threads == NULL:
            raise MemoryError()
        cdef int i, err
        for i in range(threads):
            err = pthread_create(&self.threads[i], NULL, _worker, &self.s)
            if err:
                self._stop()
                raise OSError(err, os.strerror(err))
            self.nthreads += 1
        err = pthread_create(&self.wthread, NULL, _writer, &self.s)
        if err:
            self._stop()
            raise OSError(err, os.strerror(err))
        self.wstarted = True

    def fileno(self):
        """The eventfd that becomes readable when completions are waiting."""
        return self.s.efd

    @property
    def trace(self):
        """Time each stream commit's steps into ``traces`` (off: no clock is read)."""
        return self.s.trace

    @trace.setter
    def trace(self, bint on):
        self.s.trace = on

    def submit(self, long long token, int fd, temp, final, directory, bint sync):
        """Queue ``finish_file(fd, temp, final, directory, sync)``; ``fd`` now belongs to the
        job (closed in every case)."""
        if self.closed:
            raise RuntimeError("committer is closed")
        cdef bytes t = os.fsencode(temp)
        cdef bytes f = os.fsencode(final)
        cdef bytes d = os.fsencode(directory)
        cdef Job *job = <Job *>calloc(1, sizeof(Job))
        if job == NULL:
            raise MemoryError()
        job.kind = JOB_COMMIT
        job.token = token
        job.fd = fd
        job.sync = sync
        job.err = 0
        job.step = 0
        job.temp = strdup(t)
        job.final = strdup(f)
        job.directory = strdup(d)
        if job.temp == NULL or job.final == NULL or job.directory == NULL:
            _free_job(job)
            raise MemoryError()
        self._queue(job)

    def writeback(self, int fd, long long offset, long long length):
        """Start writeback of a range of ``fd`` (``start_writeback``) on a thread: the call
        submits the I/O (block allocation included), ~0.1 ms per 128 KiB here, which the
        event loop need not spend. The job works on a duplicate of ``fd``, so the caller may
        close or commit the file meanwhile. No completion is reported; a failure only loses
        the head start."""
        if self.closed:
            raise RuntimeError("committer is closed")
        cdef int copy = dup(fd)
        if copy < 0:
            return
        cdef Job *job = <Job *>calloc(1, sizeof(Job))
        if job == NULL:
            close(copy)
            raise MemoryError()
        job.kind = JOB_WRITEBACK
        job.fd = copy
        job.offset = offset
        job.length = length
        self._queue(job)

    cdef void _queue(self, Job *job) noexcept:
        with nogil:
            pthread_mutex_lock(&self.s.lock)
            _append_todo(&self.s, job)
            pthread_cond_signal(&self.s.work)
            pthread_mutex_unlock(&self.s.lock)

    def stream(self, int fd):
        """A :class:`Stream` writing ``fd`` on these threads (the caller keeps ``fd`` open
        until it hands it to the stream's ``commit`` or ``discard``)."""
        if self.closed:
            raise RuntimeError("committer is closed")
        cdef Stream st = Stream.__new__(Stream)
        st.state = <FileState *>calloc(1, sizeof(FileState))
        if st.state == NULL:
            raise MemoryError()
        st.owner = self
        st.fd = fd
        st.state.fd = fd
        return st

    def stream_at(self, path):
        """A :class:`Stream` of a new file at ``path``, created (O_EXCL) by the writer thread
        before its first write: the inode allocation (0.07-0.26 ms here) leaves the loop too.
        A failure to create it fails the commit like a failed write."""
        if self.closed:
            raise RuntimeError("committer is closed")
        cdef bytes p = os.fsencode(path)
        cdef Stream st = Stream.__new__(Stream)
        st.state = <FileState *>calloc(1, sizeof(FileState))
        if st.state == NULL:
            raise MemoryError()
        st.state.path = strdup(p)
        if st.state.path == NULL:
            free(st.state)
            st.state = NULL
            raise MemoryError()
        st.owner = self
        st.fd = -1
        st.state.fd = -1
        return st

    @property
    def pending_bytes(self):
        """Bytes handed to stream writes and not written yet (all streams)."""
        return self.s.pending_bytes

    def drain(self):
        """Every completion since the last call, in completion order."""
        cdef u64 count
        cdef Job *job
        cdef Job *nxt
        if self.s.efd >= 0:
            c_read(self.s.efd, &count, 8)  # EAGAIN: nothing new, which is fine
        with nogil:
            pthread_mutex_lock(&self.s.lock)
            job = self.s.done_head
            self.s.done_head = self.s.done_tail = NULL
            self.s.notified = False
            self.s.held_bytes = 0
            pthread_mutex_unlock(&self.s.lock)
        out = []
        while job != NULL:
            nxt = job.next
            if job.kind == JOB_WRITE:
                _release_job(job)
                job = nxt
                continue
            if job.t_start > 0 and job.file != NULL:  # traced, and its steps ran
                self.traces.append((job.token, job.file.t_written, job.file.t_presynced,
                                    job.t_start, job.t_synced, job.t_done))
            _free_state(job.file)  # a stream's commit or discard: its writes are all done
            job.file = NULL
            if job.token < 0:
                _free_job(job)
                job = nxt
                continue
            if job.err:
                where = (job.temp, job.temp, job.final, job.directory)[job.step]
                error = OSError(job.err, os.strerror(job.err), os.fsdecode(where))
            else:
                error = None
            out.append((job.token, error))
            _free_job(job)
            job = nxt
        return out

    def close(self):
        """Finish every queued job, stop the threads, close the eventfd; returns the
        completions not drained yet (like ``drain``)."""
        if self.closed:
            return []
        self._stop()
        done = self.drain()
        os.close(self.s.efd)
        self.s.efd = -1
        return done

    cdef void _stop(self) noexcept:
        cdef int i
        self.closed = True
        with nogil:
            # the writer first: a write finishing may still queue its file's commit
            pthread_mutex_lock(&self.s.lock)
            self.s.wstopping = True
            pthread_cond_broadcast(&self.s.wwork)
            pthread_mutex_unlock(&self.s.lock)
            if self.wstarted:
                pthread_join(self.wthread, NULL)
            pthread_mutex_lock(&self.s.lock)
            self.s.stopping = True
            pthread_cond_broadcast(&self.s.work)
            pthread_mutex_unlock(&self.s.lock)
            for i in range(self.nthreads):
                pthread_join(self.threads[i], NULL)
        self.nthreads = 0
        self.wstarted = False

    def __dealloc__(self):
        cdef Job *job
        if not self.closed and self.threads != NULL:
            self._stop()
        free(self.threads)
        job = self.s.done_head
        while job != NULL:
            self.s.done_head = job.next
            if job.kind != JOB_WRITE:
                _free_state(job.file)
            _release_job(job)
            job = self.s.done_head
        if self.s.efd >= 0:
            close(self.s.efd)
        pthread_mutex_destroy(&self.s.lock)
        pthread_cond_destroy(&self.s.work)
        pthread_cond_destroy(&self.s.wwork)


cdef class Stream:
    """The writes of one temp file on the commit threads, then its commit or discard.

    ``write`` queues the buffers (held, unchanged, until written: the caller must not modify
    them) at an explicit offset; ``commit`` and ``discard`` run once every write of the file
    finished. After either, the stream is spent."""

    cdef Committer owner
    cdef FileState *state
    cdef int fd

    def write(self, parts, long long offset, long long wb_offset=0, long long wb_length=0):
        """Queue ``pwritev(fd, parts, offset)``, then ``sync_file_range`` of
        ``(wb_offset, wb_length)`` if ``wb_length``; returns the byte count."""
        if self.state == NULL:
            raise RuntimeError("stream is committed or discarded")
        if self.owner.closed:
            raise RuntimeError("committer is closed")
        cdef Py_ssize_t n = len(parts)
        cdef Py_ssize_t i, got = 0
        cdef long long total = 0
        cdef Job *job = <Job *>calloc(1, sizeof(Job))
        if job == NULL:
            raise MemoryError()
        job.views = <Py_buffer *>malloc((n if n else 1) * sizeof(Py_buffer))
        job.iov = <iovec *>malloc((n if n else 1) * sizeof(iovec))
        if job.views == NULL or job.iov == NULL:
            free(job.views)
            job.views = NULL
            _free_job(job)
            raise MemoryError()
        try:
            for i in range(n):
                PyObject_GetBuffer(parts[i], &job.views[i], PyBUF_SIMPLE)
                got += 1
                job.iov[i].iov_base = job.views[i].buf
                job.iov[i].iov_len = job.views[i].len
                total += job.views[i].len
        except BaseException:
            job.count = <int>got
            _release_job(job)
            raise
        job.kind = JOB_WRITE
        job.count = <int>n
        job.fd = self.fd
        job.offset = offset
        job.length = total
        job.wb_offset = wb_offset
        job.wb_length = wb_length
        job.file = self.state
        cdef Shared *s = &self.owner.s
        with nogil:
            pthread_mutex_lock(&s.lock)
            self.state.pending += 1
            s.pending_bytes += total
            job.next = NULL
            if s.wtodo_tail == NULL:
                s.wtodo_head = job
            else:
                s.wtodo_tail.next = job
            s.wtodo_tail = job
            pthread_cond_signal(&s.wwork)
            pthread_mutex_unlock(&s.lock)
        return total

    def commit(self, long long token, temp, final, directory, bint sync):
        """Once every write finished: ``finish_file(fd, temp, final, directory, sync)``,
        reported by ``drain`` under ``token`` (>= 0); a failed write is reported instead
        (named after ``temp``), nothing renamed. The fd now belongs to the job."""
        if token < 0:
            raise ValueError("token must be >= 0")
        self._end(token, temp, final, directory, sync)

    def discard(self, temp):
        """Once every write finished: close the fd and unlink ``temp``; not reported."""
        self._end(-1, temp, b"", b"", False)

    cdef _end(self, long long token, temp, final, directory, bint sync):
        if self.state == NULL:
            raise RuntimeError("stream is committed or discarded")
        if self.owner.closed:
            raise RuntimeError("committer is closed")
        cdef bytes t = os.fsencode(temp)
        cdef bytes f = os.fsencode(final)
        cdef bytes d = os.fsencode(directory)
        cdef Job *job = <Job *>calloc(1, sizeof(Job))
        if job == NULL:
            raise MemoryError()
        job.kind = JOB_COMMIT if token >= 0 else JOB_DISCARD
        job.token = token
        job.fd = self.fd
        job.sync = sync
        job.temp = strdup(t)
        job.final = strdup(f)
        job.directory = strdup(d)
        if job.temp == NULL or job.final == NULL or job.directory == NULL:
            _free_job(job)
            raise MemoryError()
        job.file = self.state
        self.state = NULL  # the job owns it now (freed by drain)
        cdef Shared *s = &self.owner.s
        with nogil:
            pthread_mutex_lock(&s.lock)
            _defer_or_queue(s, job.file, job)
            pthread_mutex_unlock(&s.lock)

    def presync(self):
        """Once the writes so far are done, ``fdatasync`` the file on a commit thread, ahead
        of the commit (which waits for it, then syncs again: nearly nothing left): the data
        goes to disk while the loop still validates and indexes the instance. Not reported; a
        failure only loses the head start."""
        if self.state == NULL:
            raise RuntimeError("stream is committed or discarded")
        if self.owner.closed:
            raise RuntimeError("committer is closed")
        cdef Job *job = <Job *>calloc(1, sizeof(Job))
        if job == NULL:
            raise MemoryError()
        job.kind = JOB_DATASYNC
        job.token = -1
        job.fd = self.fd
        job.file = self.state
        cdef Shared *s = &self.owner.s
        with nogil:
            pthread_mutex_lock(&s.lock)
            _defer_or_queue(s, job.file, job)
            pthread_mutex_unlock(&s.lock)


# -- page-cache residency (the sendfile path of C-GET / C-MOVE, hpacs.net.filesend) ----------

cdef extern from "<sys/mman.h>" nogil:
    void *mmap(void *addr, size_t length, int prot, int flags, int fd, long long offset)
    int munmap(void *addr, size_t length)
    int mincore(void *addr, size_t length, unsigned char *vec)
    int PROT_READ
    int MAP_SHARED
    void *MAP_FAILED

cdef extern from "<unistd.h>" nogil:
    long sysconf(int name)
    int _SC_PAGESIZE

#: Whether :func:`resident` can say yes here (the twin: when libc has mincore).
MINCORE = True
#: mincore's vector for files up to 4 MiB of 4 KiB pages lives on the stack; larger ones calloc.
DEF VEC_STACK = 1024


cdef extern from "<sys/syscall.h>" nogil:
    """
    #include <unistd.h>
    #include <errno.h>
    /* cachestat(2), Linux 6.5 (451 on every architecture); headers may not name it yet */
    struct hpacs_cachestat_range { unsigned long long off, len; };
    struct hpacs_cachestat { unsigned long long nr_cache, nr_dirty, nr_writeback, nr_evicted,
                             nr_recently_evicted; };
    static int hpacs_cached_pages(int fd, unsigned long long len, unsigned long long *pages) {
    #if defined(__linux__)
        struct hpacs_cachestat_range r = {0, len};
        struct hpacs_cachestat cs;
        if (syscall(451, fd, &r, &cs, 0) != 0) return -1;
        *pages = cs.nr_cache;
        return 0;
    #else
        errno = ENOSYS;
        return -1;
    #endif
    }
    """
    int hpacs_cached_pages(int fd, unsigned long long len, unsigned long long *pages)

#: cachestat(2) answered here (else mincore on a mapping, the twin's way).
cdef bint _cachestat = True


def resident(int fd, Py_ssize_t size):
    """True when the first ``size`` bytes of ``fd`` are all in the page cache (reading them
    cannot wait for the disk); False when not, or unknown. One call, no GIL: ``cachestat``
    (Linux 6.5+), else mmap, mincore, munmap (through ctypes, the twin's way, this was ~6 % of
    a windowed C-GET's loop CPU)."""
    cdef void *addr
    cdef size_t page, pages, i
    cdef unsigned char stack_vec[VEC_STACK]
    cdef unsigned char *vec = stack_vec
    cdef bint ok = False
    cdef unsigned long long cached = 0
    cdef bint counted = False
    global _cachestat
    if size <= 0:
        return False
    with nogil:
        page = <size_t>sysconf(_SC_PAGESIZE)
        pages = (<size_t>size + page - 1) // page
        if _cachestat:
            # the page cache's own count for the range: no mapping to build and tear down
            if hpacs_cached_pages(fd, <unsigned long long>size, &cached) == 0:
                counted = True
            else:
                _cachestat = False  # ENOSYS (kernel < 6.5) or refused: mincore from now on
    if counted:
        return cached >= pages
    with nogil:
        addr = mmap(NULL, <size_t>size, PROT_READ, MAP_SHARED, fd, 0)
        if addr != MAP_FAILED:
            if pages > VEC_STACK:
                vec = <unsigned char *>calloc(pages, 1)
            if vec != NULL and mincore(addr, <size_t>size, vec) == 0:
                ok = True
                for i in range(pages):
                    if not (vec[i] & 1):
                        ok = False
                        break
            if vec != stack_vec and vec != NULL:
                free(vec)
            munmap(addr, <size_t>size)
    return ok
