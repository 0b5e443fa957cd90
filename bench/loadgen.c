/* ssebench: an epoll load generator for Server-Sent Events servers.
 *
 * One process, one thread: holds N event streams, publishes events over HTTP keep-alive connections,
 * and reads every stream by scanning bytes for a fixed-width marker "@T<16 digits>;S<8 digits>;" that
 * carries the publish time (CLOCK_MONOTONIC, microseconds) and the event's sequence number. It never
 * parses SSE or chunked framing: a chunk-size line cannot contain '@', and the servers under test
 * write whole events per chunk.
 *
 * Server CPU is read from /proc/<pid>/stat of the given pids at the start and end of the publish
 * phase, so results are per server-CPU-second; the generator's own CPU comes from getrusage.
 * Prints one JSON object on stdout. Build: gcc -O2 -o ssebench loadgen.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define MARK_LEN 29          /* "@T" + 16 digits + ";S" + 8 digits + ";" */
#define HIST_STEP_US 100     /* latency histogram: 0.1 ms buckets up to 120 s */
#define HIST_N 1200001
#define MAX_PIDS 16
#define MAX_SAMPLES 4096

enum { S_CONNECTING, S_HEADERS, S_BODY, S_CLOSED };
enum { P_CONNECTING, P_IDLE, P_SENDING, P_READING, P_DOWN };
enum { MODE_NONE, MODE_BROADCAST, MODE_UNICAST, MODE_BATCH, MODE_EXTERNAL };

typedef struct {
    int fd;
    uint8_t state, carry_len, ready;
    uint32_t got;
    char *hdr;               /* header bytes until the blank line; freed after */
    uint16_t hdr_len;
    char carry[MARK_LEN];
} stream_t;

typedef struct {
    int fd, state;
    char *req; size_t req_len, req_off;
    char resp[4096]; size_t resp_len;
    long events;             /* events carried by the request in flight */
    long body_left;          /* -1 while reading headers */
    int status;
    long first_seq;
} pub_t;

/* ---- options ---- */
static const char *host = "127.0.0.1";
static int port = 8000, nsources = 4, nstreams = 0, mode = MODE_NONE, pub_conns = 1, batch = 1;
static const char *sub_tpl = "/sse/subscribe/c$I", *pub_path = "/sse/publish", *body_tpl = NULL;
static const char *ready_path = NULL;    /* GET returning the number of ready subscribers */
static double rate = 0, duration = 10, drain = 30, settle = 1, connect_timeout = 60, sample_every = 0;
static long count = 0, window = 4, max_pending = 256, targets = 0;
static int cpu_pids[MAX_PIDS], ncpu = 0, rss_pids[MAX_PIDS], nrss = 0;
static const char *label = "";
static const char *start_file = NULL;   /* external mode: created when the publish phase starts */

/* ---- state ---- */
static int ep;
static stream_t *streams;
static pub_t *pubs;
static uint32_t *per_event;  /* deliveries per sequence number */
static long max_events = 4000000;
static uint32_t hist[HIST_N];
static long received, dupes, foreign, busy_count, closed_early, failed, ready_count, connected;
static long sent_events, ok_events, pub_errors, pub_requests, next_seq, low_incomplete;
static char rbuf[MARK_LEN + 262144];
static volatile sig_atomic_t stop_flag;
static int timed_out;

static double now_s(void) {
    struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}
static long long now_us(void) {
    struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}
static double self_cpu(void) {
    struct rusage ru; getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}
static double server_cpu(void) {
    double total = 0; long tick = sysconf(_SC_CLK_TCK);
    for (int i = 0; i < ncpu; i++) {
        char path[64], buf[1024]; snprintf(path, sizeof path, "/proc/%d/stat", cpu_pids[i]);
        FILE *f = fopen(path, "r"); if (!f) continue;
        size_t n = fread(buf, 1, sizeof buf - 1, f); fclose(f); buf[n] = 0;
        char *p = strrchr(buf, ')'); if (!p) continue;
        unsigned long ut = 0, st = 0;
        /* after ")": state(3) ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime */
        if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) == 2)
            total += (double)(ut + st) / tick;
    }
    return total;
}
static long server_rss_kb(void) {
    long total = 0;
    for (int i = 0; i < nrss; i++) {
        char path[64], line[256]; snprintf(path, sizeof path, "/proc/%d/status", rss_pids[i]);
        FILE *f = fopen(path, "r"); if (!f) continue;
        while (fgets(line, sizeof line, f)) if (!strncmp(line, "VmRSS:", 6)) { total += atol(line + 6); break; }
        fclose(f);
    }
    return total;
}
static void parse_pids(const char *s, int *out, int *n) {
    char *copy = strdup(s), *tok, *save;
    for (tok = strtok_r(copy, ",", &save); tok && *n < MAX_PIDS; tok = strtok_r(NULL, ",", &save))
        out[(*n)++] = atoi(tok);
    free(copy);
}

/* Replace $I with the target index and $D with the payload. */
static size_t expand(char *out, const char *tpl, long index, const char *payload) {
    size_t n = 0;
    for (const char *p = tpl; *p; p++) {
        if (p[0] == '$' && p[1] == 'I') { n += sprintf(out + n, "%ld", index); p++; }
        else if (p[0] == '$' && p[1] == 'D') { n += sprintf(out + n, "%s", payload); p++; }
        else out[n++] = *p;
    }
    out[n] = 0;
    return n;
}
/* 64 bytes of event data: marker, then padding. */
static void payload(char *out, long seq) {
    int n = sprintf(out, "@T%016lld;S%08ld;", now_us(), seq);
    memset(out + n, 'x', 64 - n); out[64] = 0;
}

static int open_socket(long index) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    /* Several 127.0.0.x sources: each has its own ephemeral port range, so 10,000+ streams fit. */
    if (nsources > 1) {
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        struct sockaddr_in src = {.sin_family = AF_INET};
        src.sin_addr.s_addr = htonl(0x7f000001 + (uint32_t)(index % nsources) + 1);
        bind(fd, (struct sockaddr *)&src, sizeof src);
    }
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, host, &dst.sin_addr);
    if (connect(fd, (struct sockaddr *)&dst, sizeof dst) < 0 && errno != EINPROGRESS) { close(fd); return -1; }
    return fd;
}

/* epoll data: streams are 0..N-1, publishers are N.. */
static void watch(int fd, uint32_t events, long id, int op) {
    struct epoll_event ev = {.events = events, .data.u64 = (uint64_t)id};
    epoll_ctl(ep, op, fd, &ev);
}

/* Streams refused softly (event: busy) open again after RETRY_S, as a browser would after its retry:
 * the connect time is until every stream is held. FIFO: every wait is the same. */
#define RETRY_S 0.1
static long *retry_q; static double *retry_t; static long retry_head, retry_tail;
static long pending_connects, next_stream;
static void open_stream(long i);
static void start_streams(void) {
    while (retry_head < retry_tail && pending_connects < max_pending && retry_t[retry_head % nstreams] <= now_s())
        open_stream(retry_q[retry_head++ % nstreams]);
    while (next_stream < nstreams && pending_connects < max_pending) open_stream(next_stream++);
}
static void open_stream(long i) {
    stream_t *s = &streams[i];
    s->fd = open_socket(i);
    if (s->fd < 0) { s->state = S_CLOSED; failed++; return; }
    s->state = S_CONNECTING; pending_connects++;
    watch(s->fd, EPOLLOUT, i, EPOLL_CTL_ADD);
}

static void stream_close(stream_t *s, int early) {
    if (s->state == S_CLOSED) return;
    if (s->state == S_CONNECTING) pending_connects--;
    close(s->fd); s->state = S_CLOSED; free(s->hdr); s->hdr = NULL;
    if (early) { if (s->ready || s->got) closed_early++; else failed++; }
}

static inline void record(const char *m, long long t_now) {
    long long t = 0; long seq = 0;
    for (int k = 2; k < 18; k++) t = t * 10 + (m[k] - '0');
    for (int k = 20; k < 28; k++) seq = seq * 10 + (m[k] - '0');
    long long b = (t_now - t) / HIST_STEP_US;
    if (b < 0) b = 0;
    if (b >= HIST_N) b = HIST_N - 1;
    hist[b]++;
    received++;
    if (seq < max_events) per_event[seq]++;
}

/* Scan body bytes (with the carried tail of the last read in front) for event markers. */
static void scan(stream_t *s, char *data, size_t n) {
    char *buf = data - s->carry_len;
    memcpy(buf, s->carry, s->carry_len);
    n += s->carry_len; s->carry_len = 0;
    char *p = buf, *end = buf + n;
    long long t_now = now_us();
    while ((p = memchr(p, '@', end - p)) != NULL) {
        if (end - p < MARK_LEN) { s->carry_len = end - p; memcpy(s->carry, p, s->carry_len); return; }
        if (p[1] == 'T' && p[18] == ';' && p[19] == 'S') { record(p, t_now); s->got++; p += MARK_LEN; }
        else { foreign++; p++; }
    }
}

static void stream_event(long i, uint32_t events) {
    stream_t *s = &streams[i];
    if (s->state == S_CONNECTING) {
        int err = 0; socklen_t len = sizeof err;
        getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        pending_connects--;
        if (err) { s->state = S_HEADERS; stream_close(s, 1); return; }
        char req[1024], path[512];
        expand(path, sub_tpl, i, "");
        int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: %s:%d\r\nAccept: text/event-stream\r\n"
                         "Cache-Control: no-cache\r\n\r\n", path, host, port);
        if (send(s->fd, req, n, MSG_NOSIGNAL) != n) { s->state = S_HEADERS; stream_close(s, 1); return; }
        s->state = S_HEADERS; connected++;
        watch(s->fd, EPOLLIN | EPOLLRDHUP, i, EPOLL_CTL_MOD);
        return;
    }
    if (!(events & (EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLRDHUP))) return;
    for (;;) {
        char *data = rbuf + MARK_LEN;
        ssize_t n = recv(s->fd, data, sizeof rbuf - MARK_LEN, 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) { stream_close(s, !stop_flag); return; }
        if (n < 0) return;
        if (s->state == S_HEADERS) {
            if (!s->hdr) s->hdr = malloc(2048);
            size_t take = (size_t)n < 2047u - s->hdr_len ? (size_t)n : 2047u - s->hdr_len;
            memcpy(s->hdr + s->hdr_len, data, take); s->hdr_len += take; s->hdr[s->hdr_len] = 0;
            char *eoh = strstr(s->hdr, "\r\n\r\n");
            if (!eoh) { if (s->hdr_len >= 2047) { stream_close(s, 1); return; } continue; }
            int ok = !strncmp(s->hdr, "HTTP/1.1 200", 12) || !strncmp(s->hdr, "HTTP/1.0 200", 12);
            size_t body_at = (eoh + 4 - s->hdr) - (s->hdr_len - take);
            free(s->hdr); s->hdr = NULL;
            if (!ok) { stream_close(s, 1); return; }
            s->state = S_BODY;
            data += body_at; n -= body_at;
            if (n > 0 && memmem(data, n, "event: busy", 11)) {
                busy_count++;
                if (retry_tail - retry_head < nstreams) {
                    retry_q[retry_tail % nstreams] = i; retry_t[retry_tail % nstreams] = now_s() + RETRY_S;
                    retry_tail++;
                }
                stream_close(s, 0); s->carry_len = 0; s->hdr_len = 0;
                return;
            }
            if (!s->ready) { s->ready = 1; if (!ready_path) ready_count++; }
            if (n <= 0) continue;
        }
        scan(s, data, n);
        if ((size_t)n < sizeof rbuf - MARK_LEN) return;
    }
}

/* ---- publishing ---- */
static void pub_connect(long k) {
    pub_t *p = &pubs[k];
    p->fd = open_socket(0);
    p->state = P_CONNECTING;
    watch(p->fd, EPOLLOUT, nstreams + k, EPOLL_CTL_ADD);
}

static char *body_buf; static size_t body_cap;
static void pub_send(long k) {
    pub_t *p = &pubs[k];
    long nevents = mode == MODE_BATCH ? batch : 1;
    size_t need = 512 + nevents * (strlen(body_tpl) + 160);
    if (need > body_cap) { body_cap = need; body_buf = realloc(body_buf, body_cap); }
    size_t len = 0;
    char pl[80];
    if (mode == MODE_BATCH) body_buf[len++] = '[';
    p->first_seq = next_seq;
    for (long e = 0; e < nevents; e++) {
        long seq = next_seq++;
        payload(pl, seq);
        if (e) body_buf[len++] = ',';
        len += expand(body_buf + len, body_tpl, seq % targets, pl);
    }
    if (mode == MODE_BATCH) body_buf[len++] = ']';
    char path[512];
    expand(path, pub_path, p->first_seq % targets, "");   /* $I: a server that takes the target in the path */
    free(p->req);
    p->req = malloc(len + 768);
    p->req_len = sprintf(p->req, "POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
                         "Content-Length: %zu\r\n\r\n", path, host, port, len);
    memcpy(p->req + p->req_len, body_buf, len); p->req_len += len;
    p->req_off = 0; p->resp_len = 0; p->body_left = -1; p->events = nevents;
    sent_events += nevents; pub_requests++;
    p->state = P_SENDING;
    watch(p->fd, EPOLLOUT | EPOLLIN, nstreams + k, EPOLL_CTL_MOD);
}

static void pub_down(long k) {
    pub_t *p = &pubs[k];
    if (p->state == P_SENDING || p->state == P_READING) pub_errors += p->events;
    if (getenv("SSEBENCH_DEBUG")) fprintf(stderr, "publisher %ld down in state %d: %.200s\n", k, p->state, p->resp);
    close(p->fd); p->state = P_DOWN;
}

static void pub_event(long k, uint32_t events) {
    pub_t *p = &pubs[k];
    if (p->state == P_CONNECTING) {
        int err = 0; socklen_t len = sizeof err;
        getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) { close(p->fd); p->state = P_DOWN; return; }
        p->state = P_IDLE; watch(p->fd, EPOLLIN | EPOLLRDHUP, nstreams + k, EPOLL_CTL_MOD);
        return;
    }
    if (p->state == P_SENDING && (events & EPOLLOUT)) {
        ssize_t n = send(p->fd, p->req + p->req_off, p->req_len - p->req_off, MSG_NOSIGNAL);
        if (n < 0 && errno != EAGAIN) { pub_down(k); return; }
        if (n > 0) p->req_off += n;
        if (p->req_off == p->req_len) { p->state = P_READING; watch(p->fd, EPOLLIN | EPOLLRDHUP, nstreams + k, EPOLL_CTL_MOD); }
    }
    if (!(events & (EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLRDHUP))) return;
    for (;;) {
        char *buf = p->body_left >= 0 ? rbuf : p->resp + p->resp_len;
        size_t room = p->body_left >= 0 ? sizeof rbuf : sizeof p->resp - 1 - p->resp_len;
        ssize_t n = recv(p->fd, buf, room, 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) { pub_down(k); return; }
        if (n < 0) return;
        if (p->state != P_READING && p->state != P_SENDING) continue;   /* stray bytes */
        if (p->body_left < 0) {
            p->resp_len += n; p->resp[p->resp_len] = 0;
            char *eoh = strstr(p->resp, "\r\n\r\n");
            if (!eoh) { if (p->resp_len >= sizeof p->resp - 1) { pub_down(k); return; } continue; }
            char *cl = strcasestr(p->resp, "content-length:");
            p->status = atoi(p->resp + 9);
            p->body_left = (cl ? atol(cl + 15) : 0) - (long)(p->resp_len - (eoh + 4 - p->resp));
        } else {
            p->body_left -= n;
        }
        if (p->body_left > 0) continue;
        if (p->status >= 200 && p->status < 300) ok_events += p->events;
        else { pub_errors += p->events; if (getenv("SSEBENCH_DEBUG")) fprintf(stderr, "publish answered %.300s\n", p->resp); }
        p->state = P_IDLE; p->resp_len = 0; p->body_left = -1;
        watch(p->fd, EPOLLIN | EPOLLRDHUP, nstreams + k, EPOLL_CTL_MOD);
        return;
    }
}

/* Poll the ready endpoint with a short blocking request (servers whose streams send no headers early). */
static long poll_ready(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, host, &dst.sin_addr);
    struct timeval tv = {2, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    long value = -1;
    if (connect(fd, (struct sockaddr *)&dst, sizeof dst) == 0) {
        char req[512], resp[4096]; size_t len = 0;
        int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", ready_path);
        send(fd, req, n, MSG_NOSIGNAL);
        ssize_t r;
        while ((r = recv(fd, resp + len, sizeof resp - 1 - len, 0)) > 0) len += r;
        resp[len] = 0;
        char *b = strstr(resp, "\r\n\r\n");
        if (b) value = atol(b + 4);
    }
    close(fd);
    return value;
}

static void loop_once(int timeout_ms) {
    struct epoll_event evs[1024];
    int n = epoll_wait(ep, evs, 1024, timeout_ms);
    for (int e = 0; e < n; e++) {
        long id = (long)evs[e].data.u64;
        if (id < nstreams) stream_event(id, evs[e].events); else pub_event(id - nstreams, evs[e].events);
    }
}

/* The q-quantile in milliseconds (the upper edge of its 0.1 ms bucket); -1 with no samples. */
static double pct(long long total, double q) {
    long long want = (long long)(total * q + 0.999999), seen = 0;
    if (total == 0) return -1;
    for (long i = 0; i < HIST_N; i++) { seen += hist[i]; if (seen >= want) return (i + 1) * HIST_STEP_US / 1000.0; }
    return HIST_N * HIST_STEP_US / 1000.0;
}

static void on_signal(int sig) { (void)sig; stop_flag = 1; }

static void usage(void) {
    fprintf(stderr, "usage: ssebench --port P --streams N [--sub TPL] [--mode none|broadcast|unicast|batch]\n"
            "  [--body TPL] [--pub-path PATH] [--rate EV/S] [--count E] [--duration S] [--window W]\n"
            "  [--batch K] [--pub-conns C] [--targets T] [--sources K] [--ready PATH] [--cpu-pids a,b]\n"
            "  [--rss-pids a,b] [--settle S] [--drain S] [--sample-every S] [--label L] [--start-file F]\n"
            "external: another process publishes --count events once --start-file exists\n"
            "templates: $I = index, $D = 64-byte event data\n");
    exit(2);
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) usage();
        if (!strcmp(a, "--host")) host = v;
        else if (!strcmp(a, "--port")) port = atoi(v);
        else if (!strcmp(a, "--streams")) nstreams = atoi(v);
        else if (!strcmp(a, "--sub")) sub_tpl = v;
        else if (!strcmp(a, "--mode")) mode = !strcmp(v, "broadcast") ? MODE_BROADCAST : !strcmp(v, "unicast")
                 ? MODE_UNICAST : !strcmp(v, "batch") ? MODE_BATCH
                 : !strcmp(v, "external") ? MODE_EXTERNAL : MODE_NONE;
        else if (!strcmp(a, "--body")) body_tpl = v;
        else if (!strcmp(a, "--pub-path")) pub_path = v;
        else if (!strcmp(a, "--rate")) rate = atof(v);
        else if (!strcmp(a, "--count")) count = atol(v);
        else if (!strcmp(a, "--duration")) duration = atof(v);
        else if (!strcmp(a, "--window")) window = atol(v);
        else if (!strcmp(a, "--batch")) batch = atoi(v);
        else if (!strcmp(a, "--pub-conns")) pub_conns = atoi(v);
        else if (!strcmp(a, "--targets")) targets = atol(v);
        else if (!strcmp(a, "--sources")) nsources = atoi(v);
        else if (!strcmp(a, "--ready")) ready_path = v;
        else if (!strcmp(a, "--cpu-pids")) parse_pids(v, cpu_pids, &ncpu);
        else if (!strcmp(a, "--rss-pids")) parse_pids(v, rss_pids, &nrss);
        else if (!strcmp(a, "--settle")) settle = atof(v);
        else if (!strcmp(a, "--drain")) drain = atof(v);
        else if (!strcmp(a, "--connect-timeout")) connect_timeout = atof(v);
        else if (!strcmp(a, "--max-pending")) max_pending = atol(v);
        else if (!strcmp(a, "--sample-every")) sample_every = atof(v);
        else if (!strcmp(a, "--label")) label = v;
        else if (!strcmp(a, "--start-file")) start_file = v;
        else usage();
        i++;
    }
    if (mode != MODE_NONE && mode != MODE_EXTERNAL && !body_tpl) usage();
    if (mode == MODE_EXTERNAL && (!start_file || count <= 0)) usage();
    if (targets <= 0) targets = nstreams > 0 ? nstreams : 1;
    signal(SIGPIPE, SIG_IGN); signal(SIGTERM, on_signal); signal(SIGINT, on_signal);
    struct rlimit rl; getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max; setrlimit(RLIMIT_NOFILE, &rl);

    ep = epoll_create1(EPOLL_CLOEXEC);
    streams = calloc(nstreams + 1, sizeof *streams);
    retry_q = calloc(nstreams + 1, sizeof *retry_q); retry_t = calloc(nstreams + 1, sizeof *retry_t);
    pubs = calloc(pub_conns, sizeof *pubs);
    per_event = calloc(max_events, sizeof *per_event);

    /* ---- connect phase ---- */
    long rss0 = server_rss_kb();
    double cpu_c0 = server_cpu(), own_c0 = self_cpu();
    double t0 = now_s(), t_ready = -1, last_poll = 0;
    long ready_polled = -1, ready_base = ready_path ? poll_ready() : 0;
    if (ready_base < 0) ready_base = 0;
    start_streams();
    while (!stop_flag && now_s() - t0 < connect_timeout) {
        loop_once(20);
        start_streams();
        long done = ready_count + failed + closed_early;
        if (ready_path) {
            if (next_stream >= nstreams && pending_connects == 0 && now_s() - last_poll > 0.25) {
                last_poll = now_s();
                ready_polled = poll_ready() - ready_base;
                if (ready_polled >= connected - closed_early) break;
            }
        } else if (done >= nstreams) break;
    }
    t_ready = now_s() - t0;
    if (ready_path && ready_polled >= 0 && ready_count < ready_polled) ready_count = ready_polled;
    double cpu_c1 = server_cpu(), own_c1 = self_cpu();
    for (int k = 0; k < pub_conns && mode != MODE_NONE && mode != MODE_EXTERNAL; k++) pub_connect(k);
    double t_settle = now_s();
    while (!stop_flag && now_s() - t_settle < settle) loop_once(20);
    long rss1 = server_rss_kb();
    long holding = 0;
    for (long i = 0; i < nstreams; i++) if (streams[i].state == S_HEADERS || streams[i].state == S_BODY) holding++;

    /* ---- publish phase ---- */
    long received0 = received; memset(hist, 0, sizeof hist); received = 0;
    (void)received0;
    double cpu_p0 = server_cpu(), own_p0 = self_cpu(), p0 = now_s(), last_sent = p0, last_sample = p0;
    long samples[MAX_SAMPLES]; double sample_t[MAX_SAMPLES]; int nsamples = 0;
    long expected_each = mode == MODE_BROADCAST ? holding : 1;
    if (mode == MODE_EXTERNAL) {
        /* Another process publishes --count events, one marker each, once the start file exists. */
        FILE *f = fopen(start_file, "w"); if (f) { fputs("go\n", f); fclose(f); }
        double hard_end = p0 + duration + drain;
        while (!stop_flag && received < count) {
            if (now_s() > hard_end) { timed_out = 1; break; }
            loop_once(20);
        }
        sent_events = ok_events = count;
    } else if (mode != MODE_NONE) {
        if (count == 0 && mode == MODE_BROADCAST && rate > 0) count = (long)(rate * duration);
        double p_end = p0 + duration;
        /* A server that stops answering (out of descriptors, say) must not hold the run forever. */
        double hard_end = p0 + (count && rate > 0 ? count / rate : duration) + drain + 5;
        for (;;) {
            double t = now_s();
            if (stop_flag) break;
            int more = count ? next_seq < count : t < p_end;
            if (next_seq + batch > max_events) more = 0;
            if (more) {
                for (long k = 0; k < pub_conns; k++) {
                    if (pubs[k].state == P_DOWN) { pub_connect(k); continue; }
                    if (pubs[k].state != P_IDLE) continue;
                    if (count ? next_seq >= count : now_s() >= p_end) break;
                    if (rate > 0 && next_seq >= (long)((t - p0) * rate) + 1) break;
                    if (rate <= 0 && mode == MODE_BROADCAST) {
                        while (low_incomplete < next_seq && per_event[low_incomplete] >= (uint32_t)expected_each)
                            low_incomplete++;
                        if (next_seq - low_incomplete >= window) break;
                    }
                    pub_send(k); last_sent = now_s();
                }
            }
            int busy_pub = 0;
            for (long k = 0; k < pub_conns; k++) busy_pub |= pubs[k].state == P_SENDING || pubs[k].state == P_READING;
            long expected = ok_events * expected_each;
            if (!more && !busy_pub && (received >= expected || now_s() - last_sent > drain)) break;
            if (now_s() > hard_end) { timed_out = 1; break; }
            if (sample_every > 0 && t - last_sample >= sample_every && nsamples < MAX_SAMPLES) {
                last_sample = t; sample_t[nsamples] = t - p0; samples[nsamples++] = server_rss_kb();
                fprintf(stderr, "[%s] t=%.0fs rss=%ld KiB received=%ld sent=%ld\n", label, t - p0,
                        samples[nsamples - 1], received, sent_events);
            }
            int timeout = 5, idle_pub = 0;
            for (long k = 0; k < pub_conns; k++) idle_pub |= pubs[k].state == P_IDLE;
            /* When every publisher waits for an answer, epoll wakes us on it: never spin. */
            if (rate > 0 && more && idle_pub) {
                double due = p0 + next_seq / rate;   /* when next_seq is allowed out */
                /* Rounded up: at 1,000/s a rounded-down wait is 0 ms almost always, and the generator spins. */
                double wait_ms = (due - now_s()) * 1000;
                timeout = wait_ms <= 0 ? 0 : (int)wait_ms + 1; if (timeout > 20) timeout = 20;
            }
            loop_once(timeout);
        }
    }
    for (long k = 0; k < pub_conns; k++)   /* unanswered when the run ended: not acknowledged */
        if (pubs[k].state == P_SENDING || pubs[k].state == P_READING) pub_errors += pubs[k].events;
    double p_wall = now_s() - p0, cpu_p1 = server_cpu(), own_p1 = self_cpu();
    long rss2 = server_rss_kb();
    long expected = ok_events * expected_each;
    long short_events = 0;
    for (long s = 0; s < next_seq && s < max_events; s++) if (per_event[s] > (uint32_t)expected_each) dupes += per_event[s] - expected_each;
    (void)short_events;
    long streams_short = 0;
    if (mode == MODE_BROADCAST) for (long i = 0; i < nstreams; i++) if ((streams[i].state == S_BODY || streams[i].state == S_HEADERS) && streams[i].got < (uint32_t)ok_events) streams_short++;

    if (getenv("SSEBENCH_DEBUG"))
        for (long i = 0; i < nstreams && i < 20; i++) fprintf(stderr, "stream %ld: %u events\n", i, streams[i].got);
    double server_c = cpu_p1 - cpu_p0;
    printf("{\"label\":\"%s\",\"streams\":%d,\"connected\":%ld,\"ready\":%ld,\"failed\":%ld,\"busy\":%ld,"
           "\"holding\":%ld,\"connect_s\":%.3f,\"connect_server_cpu_s\":%.3f,\"connect_own_cpu_s\":%.3f,"
           "\"rss_before_kb\":%ld,\"rss_idle_kb\":%ld,\"rss_after_kb\":%ld,",
           label, nstreams, connected, ready_count, failed, busy_count, holding, t_ready, cpu_c1 - cpu_c0,
           own_c1 - own_c0, rss0, rss1, rss2);
    printf("\"mode\":\"%s\",\"requests\":%ld,\"events\":%ld,\"events_ok\":%ld,\"publish_errors\":%ld,"
           "\"expected\":%ld,\"received\":%ld,\"lost\":%ld,\"duplicates\":%ld,\"streams_short\":%ld,"
           "\"closed_early\":%ld,\"foreign_marks\":%ld,\"timed_out\":%d,\"planned\":%ld,",
           mode == MODE_BROADCAST ? "broadcast" : mode == MODE_UNICAST ? "unicast" : mode == MODE_BATCH ? "batch"
           : mode == MODE_EXTERNAL ? "external" : "none",
           pub_requests, sent_events, ok_events, pub_errors, expected, received,
           expected > received ? expected - received : 0, dupes, streams_short, closed_early, foreign,
           timed_out, count);
    printf("\"wall_s\":%.3f,\"server_cpu_s\":%.3f,\"own_cpu_s\":%.3f,\"per_server_cpu_s\":%.1f,\"per_wall_s\":%.1f,"
           "\"p50_ms\":%.1f,\"p90_ms\":%.1f,\"p99_ms\":%.1f,\"max_ms\":%.1f,\"rss_samples\":[",
           p_wall, server_c, own_p1 - own_p0, server_c > 0 ? received / server_c : 0.0,
           p_wall > 0 ? received / p_wall : 0.0, pct(received, 0.5), pct(received, 0.9), pct(received, 0.99),
           pct(received, 1.0));
    for (int k = 0; k < nsamples; k++) printf("%s[%.1f,%ld]", k ? "," : "", sample_t[k], samples[k]);
    printf("]}\n");
    fflush(stdout);
    for (long i = 0; i < nstreams; i++) if (streams[i].state != S_CLOSED) close(streams[i].fd);
    return 0;
}
