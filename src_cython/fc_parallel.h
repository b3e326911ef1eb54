/* fastconv's thread pool: the calling thread and persistent workers share a call's tasks.
 *
 * fc_parallel_run(fn, ctx, n_tasks, num_threads) runs fn(ctx, task, slot) once for every
 * task in [0, n_tasks).  The calling thread (slot 0) and up to num_threads - 1 workers
 * claim tasks from one atomic counter; the call returns as soon as every task has
 * COMPLETED.  A worker that wakes late, or wakes and finds no task left, never holds the
 * call back (the difference with an OpenMP parallel region, whose end waits for every
 * thread of the team).  ``slot`` is 0 for the caller and 1..num_threads-1 for the workers
 * that joined the call, stable within the call: per-thread scratch is indexed by it.
 *
 * Job descriptor.  Workers may look at a job after its call returned (they wake late), so
 * the job lives in this file's static state, never on the caller's stack.  It is published
 * under a sequence lock (odd while the caller rewrites it), and every claim -- of a slot
 * and of a task -- is a compare-and-swap on a word tagged with the job's number, so a
 * worker holding a stale descriptor can claim nothing.  A task claimed for job g keeps job
 * g's call waiting, hence its context alive, until the task's completion is counted.
 *
 * One call at a time uses the workers (a process-wide lock, taken with trylock); a second
 * concurrent call -- another Python thread, or a task calling back in -- runs its tasks
 * on its own thread (slot 0), which gives the same result.
 *
 * fn returns nonzero to stop the call: the tasks not yet started are skipped (counted as
 * completed) and fc_parallel_run returns 1.
 *
 * Idle workers spin on the job number for a bounded count (fc_parallel_set_spin), then
 * sleep on a condition variable.  After fork the child has no workers; the state is reset
 * by a pthread_atfork handler and workers are created again on demand.
 */
#ifndef FC_PARALLEL_H
#define FC_PARALLEL_H

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define FC_PAUSE() _mm_pause()
#else
#define FC_PAUSE() ((void)0)
#endif

typedef int (*fc_task_fn)(void *ctx, int64_t task, int slot);

#define FC_PAR_MAX_WORKERS 255
#define FC_PAR_MAX_TASKS ((int64_t)0x7fffffff)
/* a caller out of tasks spins this fraction of the workers' idle spin */
#define FC_PAR_CALLER_SPIN_DIVISOR 16

typedef struct {
    pthread_mutex_t call_lock;        /* held by the one call using the workers */
    pthread_mutex_t lock;             /* sleeping and waking */
    pthread_cond_t wake;              /* idle workers sleep here */
    pthread_cond_t done_cv;           /* the caller sleeps here for the last tasks */
    _Atomic uint64_t seq;             /* 2 * job number; odd while the job is rewritten */
    _Atomic(fc_task_fn) fn;
    _Atomic(void *) ctx;
    _Atomic int64_t n_tasks;
    _Atomic int max_slots;
    _Atomic uint64_t claim;           /* job number << 32 | next task */
    _Atomic uint64_t slots;           /* job number << 32 | next slot */
    _Atomic int64_t done;             /* tasks of the current job completed */
    _Atomic int stop;
    _Atomic int sleepers;             /* workers waiting on `wake` */
    _Atomic int caller_waiting;       /* the caller waits on `done_cv` */
    _Atomic long spin;                /* pause iterations before sleeping */
    int n_workers;                    /* under call_lock */
} fc_pool_state;

static fc_pool_state fc_pool = {
    PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
    PTHREAD_COND_INITIALIZER, 0, NULL, NULL, 0, 0, 0, 0, 0, 0, 0, 0, 30000, 0};
static pthread_once_t fc_pool_once = PTHREAD_ONCE_INIT;

static void fc_pool_after_fork_child(void)
{
    /* the child has only the thread that forked: no workers, fresh locks, no job */
    pthread_mutex_init(&fc_pool.call_lock, NULL);
    pthread_mutex_init(&fc_pool.lock, NULL);
    pthread_cond_init(&fc_pool.wake, NULL);
    pthread_cond_init(&fc_pool.done_cv, NULL);
    uint64_t s = atomic_load(&fc_pool.seq);
    if (s & 1) /* forked while a job was being written: leave it stable */
        atomic_store(&fc_pool.seq, s + 1);
    atomic_store(&fc_pool.sleepers, 0);
    atomic_store(&fc_pool.caller_waiting, 0);
    fc_pool.n_workers = 0;
}

static void fc_pool_register_fork(void)
{
    pthread_atfork(NULL, NULL, fc_pool_after_fork_child);
}

static void fc_parallel_set_spin(long spin)
{
    atomic_store(&fc_pool.spin, spin < 0 ? 0 : spin);
}

/* Claim the next task of job `job`: its index, or -1 when the job has none left (or
 * is no longer the current one). */
static inline int64_t fc_pool_claim_task(uint64_t job, int64_t n)
{
    uint64_t old = atomic_load_explicit(&fc_pool.claim, memory_order_relaxed);
    for (;;) {
        if ((old >> 32) != (job & 0xffffffffu))
            return -1;
        int64_t idx = (int64_t)(old & 0xffffffffu);
        if (idx >= n)
            return -1;
        if (atomic_compare_exchange_weak_explicit(&fc_pool.claim, &old, old + 1,
                                                  memory_order_acq_rel, memory_order_relaxed))
            return idx;
    }
}

/* Run claimed tasks of the current job until none is left. */
static inline void fc_pool_work(uint64_t job, fc_task_fn fn, void *ctx, int64_t n, int slot)
{
    int64_t t;
    while ((t = fc_pool_claim_task(job, n)) >= 0) {
        if (!atomic_load_explicit(&fc_pool.stop, memory_order_relaxed)) {
            if (fn(ctx, t, slot))
                atomic_store_explicit(&fc_pool.stop, 1, memory_order_relaxed);
        }
        /* seq_cst: pairs with the caller's store to caller_waiting */
        int64_t d = atomic_fetch_add(&fc_pool.done, 1) + 1;
        if (d == n && atomic_load(&fc_pool.caller_waiting)) {
            pthread_mutex_lock(&fc_pool.lock);
            pthread_cond_broadcast(&fc_pool.done_cv);
            pthread_mutex_unlock(&fc_pool.lock);
        }
    }
}

static void *fc_pool_worker(void *arg)
{
    uint64_t seen = (uint64_t)(uintptr_t)arg;   /* the job number when created */
    for (;;) {
        /* wait for a new, stable job descriptor */
        uint64_t s;
        long spins = 0, limit = atomic_load_explicit(&fc_pool.spin, memory_order_relaxed);
        for (;;) {
            s = atomic_load_explicit(&fc_pool.seq, memory_order_acquire);
            if (s != seen && !(s & 1))
                break;
            if (spins < limit) {
                spins++;
                FC_PAUSE();
                continue;
            }
            pthread_mutex_lock(&fc_pool.lock);
            atomic_fetch_add(&fc_pool.sleepers, 1);
            for (;;) {
                s = atomic_load(&fc_pool.seq);
                if (s != seen && !(s & 1))
                    break;
                pthread_cond_wait(&fc_pool.wake, &fc_pool.lock);
            }
            atomic_fetch_sub(&fc_pool.sleepers, 1);
            pthread_mutex_unlock(&fc_pool.lock);
            break;
        }
        /* read the descriptor, then check it was not being rewritten meanwhile */
        fc_task_fn fn = atomic_load_explicit(&fc_pool.fn, memory_order_relaxed);
        void *ctx = atomic_load_explicit(&fc_pool.ctx, memory_order_relaxed);
        int64_t n = atomic_load_explicit(&fc_pool.n_tasks, memory_order_relaxed);
        int max_slots = atomic_load_explicit(&fc_pool.max_slots, memory_order_relaxed);
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&fc_pool.seq, memory_order_relaxed) != s)
            continue;   /* a newer job: read that one */
        seen = s;
        uint64_t job = s >> 1;
        /* take a slot of this job, if any is left */
        uint64_t old = atomic_load_explicit(&fc_pool.slots, memory_order_relaxed);
        int slot = -1;
        for (;;) {
            if ((old >> 32) != (job & 0xffffffffu))
                break;
            int idx = (int)(old & 0xffffffffu);
            if (idx >= max_slots)
                break;
            if (atomic_compare_exchange_weak_explicit(&fc_pool.slots, &old, old + 1,
                                                      memory_order_acq_rel,
                                                      memory_order_relaxed)) {
                slot = idx;
                break;
            }
        }
        if (slot > 0)
            fc_pool_work(job, fn, ctx, n, slot);
    }
    return NULL;
}

/* Start workers until there are `want` (under call_lock); returns how many there are. */
static int fc_pool_grow(int want)
{
    if (want > FC_PAR_MAX_WORKERS)
        want = FC_PAR_MAX_WORKERS;
    while (fc_pool.n_workers < want) {
        pthread_attr_t attr;
        pthread_t th;
        sigset_t all, saved;
        int rc;
        if (pthread_attr_init(&attr) != 0)
            break;
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        /* workers take no signals: they stay with the threads that handle them */
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &saved);
        rc = pthread_create(&th, &attr, fc_pool_worker,
                            (void *)(uintptr_t)atomic_load(&fc_pool.seq));
        pthread_sigmask(SIG_SETMASK, &saved, NULL);
        pthread_attr_destroy(&attr);
        if (rc != 0)
            break;
        fc_pool.n_workers++;
    }
    return fc_pool.n_workers;
}

static int fc_pool_serial(fc_task_fn fn, void *ctx, int64_t n_tasks)
{
    for (int64_t t = 0; t < n_tasks; t++)
        if (fn(ctx, t, 0))
            return 1;
    return 0;
}

/* Run fn(ctx, task, slot) for every task; 1 when a task asked to stop, else 0. */
static int fc_parallel_run(fc_task_fn fn, void *ctx, int64_t n_tasks, int num_threads)
{
    if (n_tasks <= 0)
        return 0;
    if (num_threads > n_tasks)
        num_threads = (int)n_tasks;
    if (num_threads <= 1 || n_tasks > FC_PAR_MAX_TASKS)
        return fc_pool_serial(fn, ctx, n_tasks);
    pthread_once(&fc_pool_once, fc_pool_register_fork);
    if (pthread_mutex_trylock(&fc_pool.call_lock) != 0)
        return fc_pool_serial(fn, ctx, n_tasks);   /* the workers are busy with another call */
    int workers = fc_pool_grow(num_threads - 1);
    if (workers < 1) {
        pthread_mutex_unlock(&fc_pool.call_lock);
        return fc_pool_serial(fn, ctx, n_tasks);
    }
    int slots = num_threads;

    /* publish the job (a sequence lock: odd while written) */
    uint64_t s = atomic_load_explicit(&fc_pool.seq, memory_order_relaxed) + 1;
    uint64_t job = (s + 1) >> 1;
    atomic_store_explicit(&fc_pool.seq, s, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    atomic_store_explicit(&fc_pool.fn, fn, memory_order_relaxed);
    atomic_store_explicit(&fc_pool.ctx, ctx, memory_order_relaxed);
    atomic_store_explicit(&fc_pool.n_tasks, n_tasks, memory_order_relaxed);
    atomic_store_explicit(&fc_pool.max_slots, slots, memory_order_relaxed);
    atomic_store_explicit(&fc_pool.done, 0, memory_order_relaxed);
    atomic_store_explicit(&fc_pool.stop, 0, memory_order_relaxed);
    atomic_store_explicit(&fc_pool.slots, ((job & 0xffffffffu) << 32) | 1u,
                          memory_order_relaxed);
    atomic_store_explicit(&fc_pool.claim, (job & 0xffffffffu) << 32, memory_order_relaxed);
    atomic_store(&fc_pool.seq, s + 1);   /* stable: workers may read it now */

    int asleep = atomic_load(&fc_pool.sleepers);
    if (asleep > 0) {
        int wake = slots - 1;
        pthread_mutex_lock(&fc_pool.lock);
        for (int i = 0; i < wake && i < asleep; i++)
            pthread_cond_signal(&fc_pool.wake);
        pthread_mutex_unlock(&fc_pool.lock);
    }

    /* the caller works too, then waits only for tasks claimed by workers: a short spin
     * (the last tasks are small), then asleep, so that a worker sharing the caller's core
     * is not kept from finishing */
    fc_pool_work(job, fn, ctx, n_tasks, 0);
    long limit = atomic_load_explicit(&fc_pool.spin, memory_order_relaxed)
                 / FC_PAR_CALLER_SPIN_DIVISOR;
    for (long i = 0; i < limit; i++) {
        if (atomic_load_explicit(&fc_pool.done, memory_order_acquire) >= n_tasks)
            break;
        FC_PAUSE();
    }
    if (atomic_load_explicit(&fc_pool.done, memory_order_acquire) < n_tasks) {
        pthread_mutex_lock(&fc_pool.lock);
        atomic_store(&fc_pool.caller_waiting, 1);
        while (atomic_load(&fc_pool.done) < n_tasks)
            pthread_cond_wait(&fc_pool.done_cv, &fc_pool.lock);
        atomic_store(&fc_pool.caller_waiting, 0);
        pthread_mutex_unlock(&fc_pool.lock);
    }
    int stopped = atomic_load(&fc_pool.stop);
    pthread_mutex_unlock(&fc_pool.call_lock);
    return stopped;
}

/* Workers started so far in this process (0 in a fresh fork child). */
static int fc_parallel_workers(void)
{
    return fc_pool.n_workers;
}

#endif
