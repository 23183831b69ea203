/* Power-cut simulator: an LD_PRELOAD shim that remembers what a power loss would undo.
 *
 * For every regular file opened under $POWERCUT_DIR (except SQLite's -shm, which is memory), each
 * write or truncate first appends an undo record to $POWERCUT_UNDO_DIR/<escaped relative path>.undo:
 * the file's size before the call and the bytes the call is about to overwrite or cut off. A
 * successful fsync/fdatasync of that file empties its undo log: those writes are on the disk now.
 * After a SIGKILL, tests/reliability/power_cut.py replays the logs backwards, which leaves every
 * file as a disk would after losing every write since the file's last sync.
 *
 * Undo records need no fsync of their own: the host never really loses power, only the process dies.
 * Record: struct undo_header, then saved_len bytes that were at `offset`.
 *
 * Interposed: open/open64/openat/openat64 (to learn which inodes are watched, and to record an
 * O_TRUNC), write/pwrite/pwrite64, ftruncate/ftruncate64, fsync/fdatasync, unlink: every call the
 * system libsqlite3 makes to change a file (`nm -D libsqlite3.so.0`: pwrite64, ftruncate64,
 * fdatasync, write). close() is not: writes are matched to watched files by inode on each call,
 * so a closed and reused fd number cannot be confused with the file it used to name.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#define MAX_TRACKED 64
#define UNDO_MAGIC 0x55434350u /* "PCCU" */

struct undo_header {
    uint32_t magic;
    uint32_t reserved;
    uint64_t offset;   /* where the saved bytes go back */
    uint64_t old_size; /* the file's size before the call */
    uint64_t saved_len;
};

struct tracked_file {
    int used;
    dev_t dev;
    ino_t ino;
    int undo_fd;
    int read_fd; /* its own read-only handle: the writer's fd may be write-only */
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct tracked_file tracked[MAX_TRACKED];
static char watch_dir[PATH_MAX];
static char undo_dir[PATH_MAX];
static size_t watch_len;

static int (*real_open)(const char *, int, ...);
static int (*real_open64)(const char *, int, ...);
static int (*real_openat)(int, const char *, int, ...);
static int (*real_openat64)(int, const char *, int, ...);
static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*real_pwrite64)(int, const void *, size_t, off64_t);
static int (*real_ftruncate)(int, off_t);
static int (*real_ftruncate64)(int, off64_t);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static int (*real_unlink)(const char *);

static void die(const char *what) {
    /* A simulator that silently stops recording would make the test pass for the wrong reason. */
    char msg[512];
    int n = snprintf(msg, sizeof msg, "powercut shim: %s: %s\n", what, strerror(errno));
    if (n > 0 && real_write) real_write(2, msg, (size_t)n);
    abort();
}

static void *resolve(const char *name) {
    void *fn = dlsym(RTLD_NEXT, name);
    if (!fn) {
        errno = ENOENT;
        die(name);
    }
    return fn;
}

__attribute__((constructor)) static void powercut_init(void) {
    real_open = resolve("open");
    real_open64 = resolve("open64");
    real_openat = resolve("openat");
    real_openat64 = resolve("openat64");
    real_write = resolve("write");
    real_pwrite = resolve("pwrite");
    real_pwrite64 = resolve("pwrite64");
    real_ftruncate = resolve("ftruncate");
    real_ftruncate64 = resolve("ftruncate64");
    real_fsync = resolve("fsync");
    real_fdatasync = resolve("fdatasync");
    real_unlink = resolve("unlink");
    const char *watch = getenv("POWERCUT_DIR");
    const char *undo = getenv("POWERCUT_UNDO_DIR");
    if (!watch || !undo) return; /* preloaded without a target: records nothing */
    if (strlen(watch) >= sizeof watch_dir || strlen(undo) >= sizeof undo_dir) {
        errno = ENAMETOOLONG;
        die("POWERCUT_DIR or POWERCUT_UNDO_DIR");
    }
    strcpy(watch_dir, watch);
    strcpy(undo_dir, undo);
    watch_len = strlen(watch_dir);
    while (watch_len > 1 && watch_dir[watch_len - 1] == '/') watch_dir[--watch_len] = '\0';
}

/* The path relative to the watched directory, or NULL when the file is not watched. */
static const char *watched_relative(int dirfd, const char *path, char *buf) {
    if (!watch_len || !path) return NULL;
    if (path[0] != '/') {
        char base[PATH_MAX];
        if (dirfd == AT_FDCWD) {
            if (!getcwd(base, sizeof base)) return NULL;
        } else {
            char link[64];
            snprintf(link, sizeof link, "/proc/self/fd/%d", dirfd);
            ssize_t n = readlink(link, base, sizeof base - 1);
            if (n < 0) return NULL;
            base[n] = '\0';
        }
        if (snprintf(buf, PATH_MAX, "%s/%s", base, path) >= PATH_MAX) return NULL;
        path = buf;
    }
    if (strncmp(path, watch_dir, watch_len) != 0 || path[watch_len] != '/') return NULL;
    const char *rel = path + watch_len + 1;
    size_t len = strlen(rel);
    if (len >= 4 && strcmp(rel + len - 4, "-shm") == 0) return NULL; /* shared memory, rebuilt at open */
    return rel;
}

static void undo_log_path(const char *rel, char *out) {
    /* One flat directory: '/' and '%' are escaped as in URLs, so the helper can name the file back. */
    size_t n = (size_t)snprintf(out, PATH_MAX, "%s/", undo_dir);
    for (const char *c = rel; *c && n + 8 < PATH_MAX; c++) {
        if (*c == '/' || *c == '%') n += (size_t)snprintf(out + n, PATH_MAX - n, "%%%02X", (unsigned char)*c);
        else out[n++] = *c;
    }
    snprintf(out + n, PATH_MAX - n, ".undo");
}

static struct tracked_file *find(dev_t dev, ino_t ino) {
    for (int i = 0; i < MAX_TRACKED; i++)
        if (tracked[i].used && tracked[i].dev == dev && tracked[i].ino == ino) return &tracked[i];
    return NULL;
}

static void track(int fd, const char *rel) {
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) return;
    pthread_mutex_lock(&lock);
    if (!find(st.st_dev, st.st_ino)) {
        char log_path[PATH_MAX];
        undo_log_path(rel, log_path);
        int slot = -1;
        for (int i = 0; i < MAX_TRACKED && slot < 0; i++)
            if (!tracked[i].used) slot = i;
        if (slot < 0) {
            errno = EMFILE;
            die("too many watched files");
        }
        /* A path opened as a new file starts a new log: the old inode's records are moot. */
        int undo_fd = real_open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
        if (undo_fd < 0) die(log_path);
        char self[64];
        snprintf(self, sizeof self, "/proc/self/fd/%d", fd);
        int read_fd = real_open(self, O_RDONLY | O_CLOEXEC);
        if (read_fd < 0) die(self);
        tracked[slot] = (struct tracked_file){1, st.st_dev, st.st_ino, undo_fd, read_fd};
    }
    pthread_mutex_unlock(&lock);
}

static int guarded_truncate(int fd, int64_t length, int large);

enum open_variant { OPEN, OPEN64, OPENAT, OPENAT64 };

static int real_open_variant(enum open_variant variant, int dirfd, const char *path, int flags, mode_t mode) {
    switch (variant) {
    case OPEN: return real_open(path, flags, mode);
    case OPEN64: return real_open64(path, flags, mode);
    case OPENAT: return real_openat(dirfd, path, flags, mode);
    default: return real_openat64(dirfd, path, flags, mode);
    }
}

/* O_TRUNC would cut a watched file inside open(), where no undo record can be taken first: open
 * without it, then truncate through the recording path. */
static int open_common(enum open_variant variant, int dirfd, const char *path, int flags, mode_t mode) {
    char buf[PATH_MAX];
    const char *rel = watched_relative(dirfd, path, buf);
    if (!rel) return real_open_variant(variant, dirfd, path, flags, mode);
    int fd = real_open_variant(variant, dirfd, path, flags & ~O_TRUNC, mode);
    if (fd < 0) return fd;
    track(fd, rel);
    if ((flags & O_TRUNC) && (flags & O_ACCMODE) != O_RDONLY && guarded_truncate(fd, 0, 1) != 0) {
        int saved_errno = errno;
        close(fd);
        errno = saved_errno;
        return -1;
    }
    return fd;
}

static mode_t mode_arg(int flags, va_list ap) {
    return (flags & (O_CREAT | O_TMPFILE)) ? (mode_t)va_arg(ap, int) : 0;
}

#define OPEN_WRAPPER(name, variant)                                      \
    int name(const char *path, int flags, ...) {                         \
        va_list ap;                                                      \
        va_start(ap, flags);                                             \
        mode_t mode = mode_arg(flags, ap);                               \
        va_end(ap);                                                      \
        return open_common(variant, AT_FDCWD, path, flags, mode);        \
    }
#define OPENAT_WRAPPER(name, variant)                                    \
    int name(int dirfd, const char *path, int flags, ...) {              \
        va_list ap;                                                      \
        va_start(ap, flags);                                             \
        mode_t mode = mode_arg(flags, ap);                               \
        va_end(ap);                                                      \
        return open_common(variant, dirfd, path, flags, mode);           \
    }

OPEN_WRAPPER(open, OPEN)
OPEN_WRAPPER(open64, OPEN64)
OPENAT_WRAPPER(openat, OPENAT)
OPENAT_WRAPPER(openat64, OPENAT64)

/* The watched file behind fd, or NULL. Looked up by inode on every call, so an fd closed behind
 * our back (fclose inside libc) and reused cannot be mistaken for the file it used to be. */
static struct tracked_file *tracked_for(int fd, struct stat *st) {
    if (!watch_len || fstat(fd, st) != 0 || !S_ISREG(st->st_mode)) return NULL;
    return find(st->st_dev, st->st_ino);
}

static void append_all(int fd, struct iovec *iov, int count) {
    while (count > 0) {
        ssize_t n = writev(fd, iov, count);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("writing an undo record");
        }
        while (count > 0 && (size_t)n >= iov->iov_len) {
            n -= (ssize_t)iov->iov_len;
            iov++;
            count--;
        }
        if (count > 0) {
            iov->iov_base = (char *)iov->iov_base + n;
            iov->iov_len -= (size_t)n;
        }
    }
}

/* Save what [offset, offset + len) holds now, and the size, before a write or truncate changes them. */
static void record_undo(struct tracked_file *file, const struct stat *st, uint64_t offset, uint64_t len) {
    uint64_t size = (uint64_t)st->st_size;
    uint64_t saved = offset < size ? (len < size - offset ? len : size - offset) : 0;
    char *old = NULL;
    if (saved) {
        old = malloc(saved);
        if (!old) die("malloc");
        uint64_t got = 0;
        while (got < saved) {
            ssize_t n = pread(file->read_fd, old + got, saved - got, (off_t)(offset + got));
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) die("reading the bytes a write replaces");
            got += (uint64_t)n;
        }
    }
    struct undo_header header = {UNDO_MAGIC, 0, offset, size, saved};
    struct iovec iov[2] = {{&header, sizeof header}, {old, saved}};
    append_all(file->undo_fd, iov, saved ? 2 : 1);
    free(old);
}

static ssize_t guarded_write(int fd, const void *buf, size_t count, int64_t offset, int positional, int large) {
    struct stat st;
    pthread_mutex_lock(&lock);
    struct tracked_file *file = tracked_for(fd, &st);
    if (!file) {
        pthread_mutex_unlock(&lock);
        if (!positional) return real_write(fd, buf, count);
        return large ? real_pwrite64(fd, buf, count, offset) : real_pwrite(fd, buf, count, offset);
    }
    if (!positional) {
        offset = (fcntl(fd, F_GETFL) & O_APPEND) ? st.st_size : lseek(fd, 0, SEEK_CUR);
        if (offset < 0) die("lseek");
    }
    record_undo(file, &st, (uint64_t)offset, count);
    ssize_t n;
    if (!positional) n = real_write(fd, buf, count);
    else n = large ? real_pwrite64(fd, buf, count, offset) : real_pwrite(fd, buf, count, offset);
    int saved_errno = errno;
    pthread_mutex_unlock(&lock);
    errno = saved_errno;
    return n;
}

ssize_t write(int fd, const void *buf, size_t count) { return guarded_write(fd, buf, count, 0, 0, 0); }
ssize_t pwrite(int fd, const void *buf, size_t count, off_t offset) { return guarded_write(fd, buf, count, offset, 1, 0); }
ssize_t pwrite64(int fd, const void *buf, size_t count, off64_t offset) { return guarded_write(fd, buf, count, offset, 1, 1); }

static int guarded_truncate(int fd, int64_t length, int large) {
    struct stat st;
    pthread_mutex_lock(&lock);
    struct tracked_file *file = tracked_for(fd, &st);
    if (file && length >= 0) {
        /* Shrinking cuts [length, size) off: save it. Growing saves nothing but the old size. */
        uint64_t size = (uint64_t)st.st_size;
        record_undo(file, &st, (uint64_t)length, (uint64_t)length < size ? size - (uint64_t)length : 0);
    }
    int rc = large ? real_ftruncate64(fd, length) : real_ftruncate(fd, length);
    int saved_errno = errno;
    pthread_mutex_unlock(&lock);
    errno = saved_errno;
    return rc;
}

int ftruncate(int fd, off_t length) { return guarded_truncate(fd, length, 0); }
int ftruncate64(int fd, off64_t length) { return guarded_truncate(fd, length, 1); }

static int guarded_sync(int fd, int data_only) {
    struct stat st;
    pthread_mutex_lock(&lock);
    struct tracked_file *file = tracked_for(fd, &st);
    int rc = data_only ? real_fdatasync(fd) : real_fsync(fd);
    int saved_errno = errno;
    if (file && rc == 0 && real_ftruncate(file->undo_fd, 0) != 0) die("emptying an undo log");
    pthread_mutex_unlock(&lock);
    errno = saved_errno;
    return rc;
}

int fsync(int fd) { return guarded_sync(fd, 0); }
int fdatasync(int fd) { return guarded_sync(fd, 1); }

int unlink(const char *path) {
    /* The file's unsynced writes go with it (directory entries are not simulated), and its inode
     * number may come back for another file. */
    char buf[PATH_MAX];
    struct stat st;
    const char *rel = watched_relative(AT_FDCWD, path, buf);
    if (rel && stat(path, &st) == 0) {
        pthread_mutex_lock(&lock);
        struct tracked_file *file = find(st.st_dev, st.st_ino);
        int rc = real_unlink(path);
        int saved_errno = errno;
        if (file && rc == 0) {
            char log_path[PATH_MAX];
            undo_log_path(rel, log_path);
            close(file->undo_fd);
            close(file->read_fd);
            real_unlink(log_path);
            file->used = 0;
        }
        pthread_mutex_unlock(&lock);
        errno = saved_errno;
        return rc;
    }
    return real_unlink(path);
}
