/*
 * A small etcd v3 client over etcd's HTTP/JSON gateway, for the image metadata writes of
 * block-vitastor.so (qemu-img create, resize). License: GPL-2.0-or-later.
 *
 * Why not libvitastor: its C ABI (vitastor_c.h) reads image metadata but has no call that
 * writes it, and the driver must not run a second cluster client or shell out. The gateway
 * (`POST /v3/kv/range`, `/v3/kv/txn`, keys and values in base64) is served on etcd's client
 * port, so a blocking HTTP/1.0 request on a plain socket is all this needs.
 *
 * Blocking is acceptable here: these calls run only for create and resize (control
 * operations, not the data path), and every socket operation is bounded by
 * ETCD_HTTP_TIMEOUT_MS, so a dead etcd costs at most that per address, never a hang.
 */
#ifndef VITASTOR_ETCD_HTTP_H
#define VITASTOR_ETCD_HTTP_H

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qobject/qdict.h"

/* Per socket operation (connect, send, each receive); etcd answers in milliseconds. */
#define ETCD_HTTP_TIMEOUT_MS 5000

/* Where the cluster's etcd is and under which prefix its keys live. */
typedef struct EtcdConn {
    char **addresses;   /* "host:port[/v3]", NULL-terminated (g_strfreev) */
    char *prefix;       /* "/vitastor" unless configured */
} EtcdConn;

/*
 * Fills @conn from @etcd_host / @etcd_prefix when given, else from the JSON config file
 * (@config_path, which must exist; else $VITASTOR_CONFIG_PATH or /etc/vitastor/vitastor.conf,
 * read when it exists): its "etcd_address" (a comma-separated string or a list) and
 * "etcd_prefix".
 */
bool etcd_conn_init(EtcdConn *conn, const char *config_path, const char *etcd_host,
                    const char *etcd_prefix, Error **errp);
void etcd_conn_free(EtcdConn *conn);

/* One key as read: @value is NULL when the key does not exist (then @mod_revision is 0). */
typedef struct EtcdKv {
    char *value;
    int64_t mod_revision;
} EtcdKv;

/* Reads key @prefix@key into @kv (free kv->value with g_free). */
bool etcd_get(EtcdConn *conn, const char *key, EtcdKv *kv, Error **errp);

/*
 * Runs a transaction given as the JSON text of its "compare" and "success" arrays (keys in
 * them are already base64, see etcd_key_b64). Returns 1 when it succeeded, 0 when a
 * comparison failed, -errno on error; *revision gets the revision it ran at.
 */
int etcd_txn(EtcdConn *conn, const char *compare, const char *success, int64_t *revision,
             Error **errp);

/* base64 of @prefix@key, as the gateway wants keys (g_free). */
char *etcd_key_b64(EtcdConn *conn, const char *key);

#endif
