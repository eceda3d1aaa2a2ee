/*
 * A small etcd v3 client over etcd's HTTP/JSON gateway; see etcd_http.h for why it exists.
 * License: GPL-2.0-or-later.
 */
#include "etcd_http.h"

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>

#include "qobject/qjson.h"
#include "qobject/qlist.h"
#include "qobject/qstring.h"

#define DEFAULT_CONFIG_PATH "/etc/vitastor/vitastor.conf"
#define DEFAULT_PREFIX "/vitastor"
/* A config file or an etcd answer larger than this is not ours: refuse instead of growing. */
#define MAX_DOCUMENT (16 << 20)

static QDict *parse_json_dict(const char *text, const char *what, Error **errp)
{
    Error *local_err = NULL;
    QObject *obj = qobject_from_json(text, &local_err);
    QDict *dict;

    if (!obj) {
        error_propagate_prepend(errp, local_err, "%s is not JSON: ", what);
        return NULL;
    }
    dict = qobject_to(QDict, obj);
    if (!dict) {
        error_setg(errp, "%s is not a JSON object", what);
        qobject_unref(obj);
    }
    return dict;
}

bool etcd_conn_init(EtcdConn *conn, const char *config_path, const char *etcd_host,
                    const char *etcd_prefix, Error **errp)
{
    g_autoptr(QDict) config = NULL;
    const char *env_path = getenv("VITASTOR_CONFIG_PATH");
    /* The same file as libvitastor and every other program reads (etcd/src/config_file.rs). */
    const char *path = config_path ? config_path
                       : (env_path && *env_path) ? env_path : DEFAULT_CONFIG_PATH;
    g_autofree char *text = NULL;
    gsize len = 0;

    memset(conn, 0, sizeof(*conn));
    /* The config file is optional unless named explicitly. */
    if (config_path || access(path, F_OK) == 0) {
        g_autoptr(GError) gerr = NULL;
        if (!g_file_get_contents(path, &text, &len, &gerr)) {
            error_setg(errp, "cannot read the vitastor config %s: %s", path, gerr->message);
            return false;
        }
        if (len > MAX_DOCUMENT) {
            error_setg(errp, "the vitastor config %s is larger than %d bytes", path,
                       MAX_DOCUMENT);
            return false;
        }
        config = parse_json_dict(text, path, errp);
        if (!config) {
            return false;
        }
    }
    if (etcd_host) {
        conn->addresses = g_strsplit(etcd_host, ",", -1);
    } else if (config && qdict_haskey(config, "etcd_address")) {
        QObject *addr = qdict_get(config, "etcd_address");
        QList *list = qobject_to(QList, addr);
        QString *str = qobject_to(QString, addr);
        if (str) {
            conn->addresses = g_strsplit(qstring_get_str(str), ",", -1);
        } else if (list) {
            GPtrArray *arr = g_ptr_array_new();
            const QListEntry *e;
            QLIST_FOREACH_ENTRY(list, e) {
                QString *s = qobject_to(QString, qlist_entry_obj(e));
                if (s) {
                    g_ptr_array_add(arr, g_strdup(qstring_get_str(s)));
                }
            }
            g_ptr_array_add(arr, NULL);
            conn->addresses = (char **)g_ptr_array_free(arr, false);
        }
    }
    if (!conn->addresses || !conn->addresses[0]) {
        error_setg(errp, "no etcd address: give etcd_host=HOST\\:PORT/v3 or set etcd_address "
                   "in %s", path);
        etcd_conn_free(conn);
        return false;
    }
    if (etcd_prefix) {
        conn->prefix = g_strdup(etcd_prefix);
    } else if (config && qdict_get_try_str(config, "etcd_prefix")) {
        conn->prefix = g_strdup(qdict_get_try_str(config, "etcd_prefix"));
    } else {
        conn->prefix = g_strdup(DEFAULT_PREFIX);
    }
    return true;
}

void etcd_conn_free(EtcdConn *conn)
{
    g_strfreev(conn->addresses);
    g_free(conn->prefix);
    memset(conn, 0, sizeof(*conn));
}

char *etcd_key_b64(EtcdConn *conn, const char *key)
{
    g_autofree char *full = g_strconcat(conn->prefix, key, NULL);
    return g_base64_encode((const guchar *)full, strlen(full));
}

/* Connects to host:port within ETCD_HTTP_TIMEOUT_MS; returns the fd or -errno. */
static int connect_timeout(const char *host, const char *port)
{
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
    struct addrinfo *res = NULL, *ai;
    struct timeval tv = {
        .tv_sec = ETCD_HTTP_TIMEOUT_MS / 1000,
        .tv_usec = (ETCD_HTTP_TIMEOUT_MS % 1000) * 1000,
    };
    int ret = -EHOSTUNREACH;

    if (getaddrinfo(host, port, &hints, &res) != 0) {
        return -EHOSTUNREACH;
    }
    for (ai = res; ai; ai = ai->ai_next) {
        struct pollfd pfd;
        int err = 0;
        socklen_t errlen = sizeof(err);
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
                        ai->ai_protocol);
        if (fd < 0) {
            ret = -errno;
            continue;
        }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0 && errno != EINPROGRESS) {
            ret = -errno;
            close(fd);
            continue;
        }
        pfd = (struct pollfd) { .fd = fd, .events = POLLOUT };
        if (poll(&pfd, 1, ETCD_HTTP_TIMEOUT_MS) != 1) {
            ret = -ETIMEDOUT;
            close(fd);
            continue;
        }
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &errlen) < 0 || err) {
            ret = err ? -err : -errno;
            close(fd);
            continue;
        }
        /* Back to blocking, with every later send and receive bounded by the timeout. */
        if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) < 0 ||
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0 ||
            setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0) {
            ret = -errno;
            close(fd);
            continue;
        }
        ret = fd;
        break;
    }
    freeaddrinfo(res);
    return ret;
}

/*
 * POSTs @body to http://@address/v3/kv/@api and returns the response body (HTTP/1.0, so the
 * server closes after one unchunked answer). Returns NULL with @errp set on any failure.
 */
static char *http_post(const char *address, const char *api, const char *body, Error **errp)
{
    g_autofree char *hostport = NULL;
    g_autofree char *request = NULL;
    g_autoptr(GString) reply = g_string_new(NULL);
    const char *a = address, *slash, *colon, *status_end, *body_start;
    const char *path = "/v3";
    g_autofree char *host = NULL;
    int fd, status;
    size_t sent = 0, len;

    if (g_str_has_prefix(a, "http://")) {
        a += strlen("http://");
    }
    slash = strchr(a, '/');
    hostport = slash ? g_strndup(a, slash - a) : g_strdup(a);
    if (slash && strcmp(slash, "/") != 0) {
        path = slash;
    }
    colon = strrchr(hostport, ':');
    if (!colon || colon == hostport) {
        error_setg(errp, "etcd address '%s' has no port", address);
        return NULL;
    }
    host = g_strndup(hostport, colon - hostport);
    /* [::1]:2379 */
    if (host[0] == '[' && host[strlen(host) - 1] == ']') {
        char *inner = g_strndup(host + 1, strlen(host) - 2);
        g_free(host);
        host = inner;
    }
    fd = connect_timeout(host, colon + 1);
    if (fd < 0) {
        error_setg_errno(errp, -fd, "cannot connect to etcd at %s", address);
        return NULL;
    }
    request = g_strdup_printf("POST %s/kv/%s HTTP/1.0\r\nHost: %s\r\n"
                              "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                              path, api, hostport, strlen(body), body);
    len = strlen(request);
    while (sent < len) {
        ssize_t n = send(fd, request + sent, len - sent, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            error_setg_errno(errp, n < 0 ? errno : EPIPE, "sending to etcd at %s", address);
            close(fd);
            return NULL;
        }
        sent += n;
    }
    for (;;) {
        char buf[16384];
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            error_setg_errno(errp, errno == EAGAIN ? ETIMEDOUT : errno,
                             "receiving from etcd at %s", address);
            close(fd);
            return NULL;
        }
        if (n == 0) {
            break;
        }
        if (reply->len + n > MAX_DOCUMENT) {
            error_setg(errp, "etcd at %s answered more than %d bytes", address, MAX_DOCUMENT);
            close(fd);
            return NULL;
        }
        g_string_append_len(reply, buf, n);
    }
    close(fd);
    if (sscanf(reply->str, "HTTP/%*d.%*d %d", &status) != 1) {
        error_setg(errp, "etcd at %s sent no HTTP status line", address);
        return NULL;
    }
    body_start = strstr(reply->str, "\r\n\r\n");
    if (!body_start) {
        error_setg(errp, "etcd at %s sent a truncated HTTP answer", address);
        return NULL;
    }
    body_start += 4;
    if (status != 200) {
        status_end = strchr(reply->str, '\r');
        error_setg(errp, "etcd at %s: %.*s: %s", address, (int)(status_end - reply->str),
                   reply->str, body_start);
        return NULL;
    }
    return g_strdup(body_start);
}

/* Calls the gateway at each address in turn until one answers; returns its JSON answer. */
static QDict *etcd_call(EtcdConn *conn, const char *api, const char *body, Error **errp)
{
    Error *last = NULL;
    int i;

    for (i = 0; conn->addresses[i]; i++) {
        g_autofree char *answer = NULL;
        error_free(last);
        last = NULL;
        answer = http_post(g_strstrip(conn->addresses[i]), api, body, &last);
        if (answer) {
            return parse_json_dict(answer, "etcd's answer", errp);
        }
    }
    error_propagate(errp, last);
    return NULL;
}

/* etcd's gateway writes int64 fields as JSON strings ("mod_revision":"12"). */
static int64_t json_int64(QDict *d, const char *key)
{
    const char *s = qdict_get_try_str(d, key);
    return s ? g_ascii_strtoll(s, NULL, 10) : qdict_get_try_int(d, key, 0);
}

static int64_t header_revision(QDict *answer)
{
    QDict *header = qdict_get_qdict(answer, "header");
    return header ? json_int64(header, "revision") : 0;
}

bool etcd_get(EtcdConn *conn, const char *key, EtcdKv *kv, Error **errp)
{
    g_autofree char *k = etcd_key_b64(conn, key);
    g_autofree char *body = g_strdup_printf("{\"key\":\"%s\"}", k);
    g_autoptr(QDict) answer = etcd_call(conn, "range", body, errp);
    QList *kvs;
    QDict *first;

    kv->value = NULL;
    kv->mod_revision = 0;
    if (!answer) {
        return false;
    }
    kvs = qdict_get_qlist(answer, "kvs");
    first = kvs ? qobject_to(QDict, qlist_peek(kvs)) : NULL;
    if (first) {
        const char *v = qdict_get_try_str(first, "value");
        gsize n = 0;
        guchar *raw = v ? g_base64_decode(v, &n) : NULL;
        kv->value = g_strndup((const char *)raw, n);
        g_free(raw);
        kv->mod_revision = json_int64(first, "mod_revision");
    }
    return true;
}

int etcd_txn(EtcdConn *conn, const char *compare, const char *success, int64_t *revision,
             Error **errp)
{
    g_autofree char *body = g_strdup_printf("{\"compare\":%s,\"success\":%s}", compare, success);
    g_autoptr(QDict) answer = etcd_call(conn, "txn", body, errp);

    if (!answer) {
        return -EIO;
    }
    *revision = header_revision(answer);
    /* proto3 JSON leaves out false booleans. */
    return qdict_get_try_bool(answer, "succeeded", false) ? 1 : 0;
}
