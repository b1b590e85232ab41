#define _GNU_SOURCE
#include "CBatonShims.h"

#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/filter.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>
#include <linux/rtnetlink.h>
#include <sys/stat.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/file.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

int baton_spawn(pid_t *pid, const char *path, char *const argv[], char *const envp[],
                const int *fds, const int *targets, int nfds, const int stdio_fds[3],
                int new_pgroup, int new_session) {
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    int rc = posix_spawn_file_actions_init(&fa);
    if (rc != 0) return rc;
    rc = posix_spawnattr_init(&attr);
    if (rc != 0) { posix_spawn_file_actions_destroy(&fa); return rc; }

    for (int i = 0; i < 3 && rc == 0; i++) {
        if (stdio_fds && stdio_fds[i] >= 0) rc = posix_spawn_file_actions_adddup2(&fa, stdio_fds[i], i);
    }
    // The caller keeps its copies at numbers above 3 + nfds (F_DUPFD_CLOEXEC
    // with a high minimum), so these dup2 never overwrite a later source and
    // never degenerate into dup2(fd, fd), which would leave FD_CLOEXEC set.
    int top = 2;
    for (int i = 0; i < nfds && rc == 0; i++) {
        int target = targets ? targets[i] : 3 + i;
        if (target > top) top = target;
        rc = posix_spawn_file_actions_adddup2(&fa, fds[i], target);
    }
    if (rc == 0) rc = posix_spawn_file_actions_addclosefrom_np(&fa, top + 1);

    sigset_t empty, all;
    sigemptyset(&empty);
    sigfillset(&all);
    sigdelset(&all, SIGKILL);
    sigdelset(&all, SIGSTOP);
    // glibc's sigfillset leaves out the signals it keeps for itself (from the
    // kernel's first real-time signal up to SIGRTMIN: 32 and 33), and its
    // posix_spawn then sets them to SIG_IGN in the child, which keeps that
    // across exec. Mark them by hand so the app starts with every signal at
    // its default, as after fork and exec. (sigaddset refuses them.)
    unsigned long *words = (unsigned long *)&all;
    const int bits = 8 * sizeof(unsigned long);
    for (int sig = __SIGRTMIN; sig < SIGRTMIN; sig++) words[(sig - 1) / bits] |= 1UL << ((sig - 1) % bits);
    short flags = POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF;
    if (new_session) flags |= POSIX_SPAWN_SETSID;
    else if (new_pgroup) flags |= POSIX_SPAWN_SETPGROUP;
    if (rc == 0) rc = posix_spawnattr_setsigmask(&attr, &empty);
    if (rc == 0) rc = posix_spawnattr_setsigdefault(&attr, &all);
    if (rc == 0 && !new_session && new_pgroup) rc = posix_spawnattr_setpgroup(&attr, 0);
    if (rc == 0) rc = posix_spawnattr_setflags(&attr, flags);
    if (rc == 0) rc = posix_spawn(pid, path, &fa, &attr, argv, envp);

    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&fa);
    return rc;
}

int baton_set_subreaper(void) { return prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); }

ssize_t baton_recv_with_pid(int fd, void *buf, size_t len, pid_t *pid) {
    struct iovec iov = {.iov_base = buf, .iov_len = len};
    union {
        char buf[CMSG_SPACE(sizeof(struct ucred)) + CMSG_SPACE(sizeof(int) * 16)];
        struct cmsghdr align;
    } control;
    struct msghdr msg;
    memset(&msg, 0, sizeof(msg));
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.buf;
    msg.msg_controllen = sizeof(control.buf);
    *pid = 0;
    ssize_t n = recvmsg(fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC | MSG_TRUNC);
    if (n < 0) return n;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET) continue;
        if (c->cmsg_type == SCM_CREDENTIALS && c->cmsg_len >= CMSG_LEN(sizeof(struct ucred))) {
            struct ucred cred;
            memcpy(&cred, CMSG_DATA(c), sizeof(cred));
            *pid = cred.pid;
        } else if (c->cmsg_type == SCM_RIGHTS) {
            size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            int *passed = (int *)CMSG_DATA(c);
            for (size_t i = 0; i < count; i++) close(passed[i]);
        }
    }
    return n;
}

int baton_signalfd(const int *signals, int count) {
    sigset_t set;
    sigemptyset(&set);
    for (int i = 0; i < count; i++) sigaddset(&set, signals[i]);
    if (pthread_sigmask(SIG_BLOCK, &set, NULL) != 0) return -1;
    return signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
}

int baton_signalfd_read(int fd) {
    struct signalfd_siginfo info;
    ssize_t n = read(fd, &info, sizeof(info));
    if (n == (ssize_t)sizeof(info)) return (int)info.ssi_signo;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
    return -1;
}

int baton_unblock_all_signals(void) {
    sigset_t empty;
    sigemptyset(&empty);
    return pthread_sigmask(SIG_SETMASK, &empty, NULL);
}

int baton_epoll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }

int baton_epoll_add(int epfd, int fd, uint64_t token) {
    struct epoll_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.events = EPOLLIN;
    ev.data.u64 = token;
    return epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
}

int baton_epoll_watch(int epfd, int fd, uint64_t token, int writable, int modify) {
    struct epoll_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.events = EPOLLIN | EPOLLRDHUP | (writable ? EPOLLOUT : 0);
    ev.data.u64 = token;
    return epoll_ctl(epfd, modify ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &ev);
}

int baton_epoll_watch_hangup(int epfd, int fd, uint64_t token) {
    struct epoll_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.events = 0;
    ev.data.u64 = token;
    return epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
}

int baton_epoll_del(int epfd, int fd) { return epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL); }

int baton_epoll_wait(int epfd, uint64_t *tokens, int max, int timeout_ms) {
    struct epoll_event evs[32];
    if (max > 32) max = 32;
    int n = epoll_wait(epfd, evs, max, timeout_ms);
    for (int i = 0; i < n; i++) tokens[i] = evs[i].data.u64;
    return n;
}

int baton_fcntl_getfd(int fd) { return fcntl(fd, F_GETFD); }
int baton_fcntl_setfd(int fd, int flags) { return fcntl(fd, F_SETFD, flags); }
int baton_fcntl_getfl(int fd) { return fcntl(fd, F_GETFL); }
int baton_fcntl_setfl(int fd, int flags) { return fcntl(fd, F_SETFL, flags); }
int baton_fcntl_dupfd_cloexec(int fd, int min) { return fcntl(fd, F_DUPFD_CLOEXEC, min); }

int baton_open(const char *path, int flags, mode_t mode) { return open(path, flags, mode); }

pid_t baton_peek_exited_child(int *signaled, int *code) {
    siginfo_t info;
    memset(&info, 0, sizeof(info));
    if (waitid(P_ALL, 0, &info, WEXITED | WNOHANG | WNOWAIT) != 0) return -1;
    *signaled = (info.si_code == CLD_KILLED || info.si_code == CLD_DUMPED);
    *code = info.si_status;
    return info.si_pid;
}

int baton_wifexited(int status) { return WIFEXITED(status); }
int baton_wexitstatus(int status) { return WEXITSTATUS(status); }
int baton_wifsignaled(int status) { return WIFSIGNALED(status); }
int baton_wtermsig(int status) { return WTERMSIG(status); }

static void baton_alarm_noop(int sig) { (void)sig; }

int baton_flock_timeout(int fd, long long timeout_ms) {
    struct sigaction sa, old;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = baton_alarm_noop; /* no SA_RESTART: flock returns EINTR */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGALRM, &sa, &old);
    struct itimerval timer, off;
    memset(&timer, 0, sizeof(timer));
    memset(&off, 0, sizeof(off));
    timer.it_value.tv_sec = timeout_ms / 1000;
    timer.it_value.tv_usec = (timeout_ms % 1000) * 1000;
    if (timeout_ms <= 0) timer.it_value.tv_usec = 1;
    setitimer(ITIMER_REAL, &timer, NULL);
    int rc = flock(fd, LOCK_EX);
    int saved = errno;
    setitimer(ITIMER_REAL, &off, NULL);
    sigaction(SIGALRM, &old, NULL);
    errno = saved;
    return rc;
}

int baton_set_process_name(const char *name) {
    return prctl(PR_SET_NAME, (unsigned long)name, 0UL, 0UL, 0UL);
}

int baton_inotify_watch(const char *dir) {
    int fd = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
    if (fd < 0) return -1;
    if (inotify_add_watch(fd, dir, IN_CREATE | IN_MOVED_TO | IN_CLOSE_WRITE | IN_DELETE) < 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

long long baton_peer_uid(int fd) {
    struct ucred cred;
    socklen_t len = sizeof(cred);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return -1;
    return (long long)cred.uid;
}

int baton_somaxconn(void) {
    FILE *f = fopen("/proc/sys/net/core/somaxconn", "re");
    int value = 4096;
    if (f) {
        if (fscanf(f, "%d", &value) != 1) value = 4096;
        fclose(f);
    }
    return value;
}

char **baton_environ(void) { return environ; }

int baton_steer_reuseport(int fd, unsigned int index) {
    struct sock_filter code[] = {{BPF_RET | BPF_K, 0, 0, index}};
    struct sock_fprog program = {.len = 1, .filter = code};
    return setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &program, sizeof program);
}

int baton_steer_reuseport_probe(int fd, unsigned int probe_port, unsigned int probe_index, unsigned int other_index) {
    // The program runs with the packet at the TCP payload; SKF_NET_OFF
    // reaches the network header. IPv4: its length from IHL; IPv6 (no
    // extension headers on a SYN from loopback): 40 bytes. The TCP source
    // port is the first half-word after it.
    struct sock_filter code[] = {
        /* 0 */ BPF_STMT(BPF_LD | BPF_B | BPF_ABS, (unsigned int)SKF_NET_OFF),
        /* 1 */ BPF_STMT(BPF_ALU | BPF_RSH | BPF_K, 4),
        /* 2 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 4, 0, 2),
        /* 3 */ BPF_STMT(BPF_LDX | BPF_B | BPF_MSH, (unsigned int)SKF_NET_OFF),
        /* 4 */ BPF_JUMP(BPF_JMP | BPF_JA, 1, 0, 0),
        /* 5 */ BPF_STMT(BPF_LDX | BPF_W | BPF_IMM, 40),
        /* 6 */ BPF_STMT(BPF_LD | BPF_H | BPF_IND, (unsigned int)SKF_NET_OFF),
        /* 7 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, probe_port, 0, 1),
        /* 8 */ BPF_STMT(BPF_RET | BPF_K, probe_index),
        /* 9 */ BPF_STMT(BPF_RET | BPF_K, other_index),
    };
    struct sock_fprog program = {.len = sizeof code / sizeof code[0], .filter = code};
    return setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &program, sizeof program);
}

int baton_unix_accept_queue(int fd) {
    struct stat st;
    if (fstat(fd, &st) != 0) return -1;
    int nl = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
    if (nl < 0) return -1;
    struct {
        struct nlmsghdr header;
        struct unix_diag_req request;
    } message;
    memset(&message, 0, sizeof message);
    message.header.nlmsg_len = sizeof message;
    message.header.nlmsg_type = SOCK_DIAG_BY_FAMILY;
    message.header.nlmsg_flags = NLM_F_REQUEST;
    message.request.sdiag_family = AF_UNIX;
    message.request.udiag_states = ~0U;
    message.request.udiag_ino = (unsigned int)st.st_ino;
    message.request.udiag_show = UDIAG_SHOW_RQLEN;
    message.request.udiag_cookie[0] = ~0U;
    message.request.udiag_cookie[1] = ~0U;
    int result = -1;
    if (send(nl, &message, sizeof message, 0) == (ssize_t)sizeof message) {
        union {
            struct nlmsghdr header;
            char bytes[8192];
        } buffer;
        ssize_t n = recv(nl, &buffer, sizeof buffer, 0);
        struct nlmsghdr *h = &buffer.header;
        if (n > 0 && NLMSG_OK(h, (size_t)n)) {
            if (h->nlmsg_type == NLMSG_ERROR) {
                struct nlmsgerr *e = NLMSG_DATA(h);
                errno = e->error < 0 ? -e->error : EPROTO;
            } else if (h->nlmsg_type == SOCK_DIAG_BY_FAMILY) {
                struct unix_diag_msg *m = NLMSG_DATA(h);
                int left = (int)(h->nlmsg_len - NLMSG_LENGTH(sizeof *m));
                for (struct rtattr *a = (struct rtattr *)(m + 1); RTA_OK(a, left); a = RTA_NEXT(a, left)) {
                    if (a->rta_type == UNIX_DIAG_RQLEN && RTA_PAYLOAD(a) >= sizeof(struct unix_diag_rqlen)) {
                        result = (int)((struct unix_diag_rqlen *)RTA_DATA(a))->udiag_rqueue;
                    }
                }
                if (result < 0) errno = ENOENT;
            }
        }
    }
    int saved = errno;
    close(nl);
    errno = saved;
    return result;
}

int baton_tcp_accept_queue(int fd) {
    struct tcp_info info;
    socklen_t len = sizeof info;
    memset(&info, 0, sizeof info);
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) != 0) return -1;
    // On a listener, the kernel reports its accept queue in tcpi_unacked.
    return (int)info.tcpi_unacked;
}

int baton_listener_has_pending(int fd) {
    struct pollfd p = {.fd = fd, .events = POLLIN, .revents = 0};
    int r = poll(&p, 1, 0);
    if (r < 0) return -1;
    return (r > 0 && (p.revents & POLLIN)) ? 1 : 0;
}

int baton_memfd(const char *name) { return memfd_create(name, MFD_CLOEXEC); }
