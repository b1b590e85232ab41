// Small C helpers for the pieces of glibc that Swift cannot reach: macros,
// variadic functions and declarations behind _GNU_SOURCE.
#ifndef CBATON_SHIMS_H
#define CBATON_SHIMS_H

#include <stdint.h>
#include <sys/types.h>
#include <signal.h>

/// Spawns `path` with `argv`/`envp`. The child gets `fds[i]` at descriptor
/// `targets[i]` (`3 + i` when `targets` is NULL), without FD_CLOEXEC;
/// stdin/stdout/stderr from `stdio_fds` (-1 keeps the parent's); no other
/// descriptor above the highest target; an empty signal mask and default
/// signal dispositions. `new_pgroup` puts it in a process group of its own,
/// `new_session` in a session of its own. Returns 0 and sets `*pid`, or an errno.
int baton_spawn(pid_t *pid, const char *path, char *const argv[], char *const envp[],
                const int *fds, const int *targets, int nfds, const int stdio_fds[3],
                int new_pgroup, int new_session);

/// Marks this process a child subreaper (PR_SET_CHILD_SUBREAPER).
int baton_set_subreaper(void);

/// Receives one datagram from `fd` with the sender's credentials
/// (SO_PASSCRED must be set). Returns the byte count or -1 (errno set);
/// `*pid` is the sender's pid, or 0 when the kernel attached none.
/// Descriptors passed along with the datagram are closed.
ssize_t baton_recv_with_pid(int fd, void *buf, size_t len, pid_t *pid);

/// Blocks `signals` (a list of `count` signal numbers) in this thread and
/// returns a non-blocking, close-on-exec signalfd that reports them, or -1.
int baton_signalfd(const int *signals, int count);

/// Reads one signal from a signalfd: returns the signal number, 0 when none
/// is pending, or -1 on error.
int baton_signalfd_read(int fd);

/// Unblocks every signal in this thread (used before exec).
int baton_unblock_all_signals(void);

/// A close-on-exec epoll instance, or -1.
int baton_epoll_create(void);

/// epoll helpers: add `fd` for reading with `token` as its data.
int baton_epoll_add(int epfd, int fd, uint64_t token);
int baton_epoll_del(int epfd, int fd);
/// Adds `fd` (or, with `modify`, changes it) for reading and, with `writable`, writing.
int baton_epoll_watch(int epfd, int fd, uint64_t token, int writable, int modify);
/// Adds `fd` for hang-ups only (no event mask: epoll reports EPOLLHUP and
/// EPOLLERR always), such as a listening socket that another process shut down.
int baton_epoll_watch_hangup(int epfd, int fd, uint64_t token);
/// Waits for events; fills `tokens` (at most `max`) and returns the count,
/// 0 on timeout, or -1 (errno set). `timeout_ms` -1 waits forever.
int baton_epoll_wait(int epfd, uint64_t *tokens, int max, int timeout_ms);

/// fcntl without varargs.
int baton_fcntl_getfd(int fd);
int baton_fcntl_setfd(int fd, int flags);
int baton_fcntl_getfl(int fd);
int baton_fcntl_setfl(int fd, int flags);
int baton_fcntl_dupfd_cloexec(int fd, int min);

/// open(2) without varargs.
int baton_open(const char *path, int flags, mode_t mode);

/// waitid(P_ALL, WEXITED|WNOHANG|WNOWAIT): peeks at one exited child without
/// reaping it, so its pid (and process group number) cannot be reused yet.
/// Returns its pid, 0 when none, -1 on error (ECHILD: no child). `*signaled`
/// is 1 when a signal killed it, and `*code` the exit code or the signal.
pid_t baton_peek_exited_child(int *signaled, int *code);

/// Decodes a wait status.
int baton_wifexited(int status);
int baton_wexitstatus(int status);
int baton_wifsignaled(int status);
int baton_wtermsig(int status);

/// Takes an exclusive flock on `fd`, waiting at most `timeout_ms` (a
/// blocking flock interrupted by SIGALRM). Returns 0, or -1 with errno
/// (EINTR: the deadline passed).
int baton_flock_timeout(int fd, long long timeout_ms);
/* Sets this process's name as ps, top and pgrep show it (/proc/self/comm),
 * at most 15 bytes. A program started from /proc/self/exe or a descriptor is
 * otherwise named "exe" or a number. */
int baton_set_process_name(const char *name);

/// An inotify descriptor (close-on-exec, non-blocking) watching `dir` for
/// files created, moved in or written; -1 on error.
int baton_inotify_watch(const char *dir);

/// The uid of the process at the other end of a unix socket, or -1.
long long baton_peer_uid(int fd);

/// The kernel's `SOMAXCONN` limit from /proc, or 4096.
int baton_somaxconn(void);

/// The environment of this process.
char **baton_environ(void);

/// A close-on-exec anonymous file in memory (memfd_create), or -1.
int baton_memfd(const char *name);

/// Attaches to the SO_REUSEPORT group of `fd` a one-instruction classic BPF
/// program that returns `index`: every new connection goes to the socket in
/// that slot (an index out of range makes the kernel hash over the group).
/// Needs no privilege. Returns 0 or -1 (errno set).
int baton_steer_reuseport(int fd, unsigned int index);

/// Attaches to the SO_REUSEPORT group of `fd` a classic BPF program that
/// sends a connection from TCP source port `probe_port` (IPv4 or IPv6) to slot
/// `probe_index` and every other one to slot `other_index`. Returns 0 or -1.
int baton_steer_reuseport_probe(int fd, unsigned int probe_port, unsigned int probe_index, unsigned int other_index);

/// The number of connections waiting in a listening unix stream socket's
/// queue (sock_diag), or -1 (errno set) when the kernel does not tell.
int baton_unix_accept_queue(int fd);

/// The accept-queue length of a listening TCP socket (TCP_INFO's
/// tcpi_unacked), or -1 (errno set).
int baton_tcp_accept_queue(int fd);

/// 1 when a listening socket has a connection waiting to be accepted, 0
/// when its queue is empty, -1 on error.
int baton_listener_has_pending(int fd);

#endif
