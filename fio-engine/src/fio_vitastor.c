/*
 * libfio_vitastor.so: a fio ioengine that does I/O on a vitastor image through
 * libvitastor.so (the C ABI of include/vitastor_c.h). License: GPL-2.0-or-later.
 *
 *   fio -thread -ioengine=libfio_vitastor.so -name=test -bs=4k -direct=1 -iodepth=16 \
 *       -rw=randwrite -etcd=127.0.0.1:2379/v3 (-image=NAME | -pool=1 -inode=1 -size=10G)
 *
 * Compiled against the headers of the exact installed fio (scripts/fio-headers.sh) because
 * it reads `struct thread_data`, whose layout changes between fio releases without a
 * FIO_IOOPS_VERSION bump. fio reaches this file through get_ioengine() in src/lib.rs.
 *
 * Life of a job:
 * - setup() may run in fio's main thread before the job starts (create_serialize, the
 *   default), so it only resolves the image size with a short-lived client; it also forces
 *   -thread, because the client runs its own threads, which a fork() would not copy.
 * - init() runs in the job's thread: it creates the client the job uses and resolves the
 *   image again (setup() may not have run yet when create_serialize=0).
 * - queue() starts one op and returns FIO_Q_QUEUED; its callback puts the io_u on the
 *   completed list. getevents() drives the client until enough io_u's are on that list;
 *   event() hands them to fio. Everything happens on the job's thread: callbacks only run
 *   inside vitastor_c_* calls made here.
 */

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>

#include "fio.h"
#include "optgroup.h"

#include "vitastor_c.h"

/* Bound on every wait for etcd during setup/init, so a wrong -etcd fails the job instead
 * of hanging fio forever. */
#define VITASTOR_FIO_RESOLVE_TIMEOUT_MS 30000

/* Mask of the inode number bits below the pool id. */
#define VITASTOR_INODE_MASK ((UINT64_C(1) << (64 - POOL_ID_BITS)) - 1)

struct vitastor_fio_options {
	/* fio stores the job's thread_data pointer at offset 0 of every engine option struct
	 * (init.c), so no option may live there. */
	void *pad;
	char *config_path;
	char *etcd_address;
	char *etcd_prefix;
	/* Client options, passed to libvitastor as given: it validates them. */
	char *client_op_timeout;
	char *client_retry_interval;
	char *peer_connect_timeout;
	char *image;
	unsigned int pool;
	unsigned long long inode;
	unsigned int log_level;
};

static struct fio_option vitastor_fio_options[] = {
	{
		.name = "conf",
		.lname = "Vitastor config path",
		.type = FIO_OPT_STR_STORE,
		.off1 = offsetof(struct vitastor_fio_options, config_path),
		.help = "Vitastor config file (default /etc/vitastor/vitastor.conf when it exists)",
		.category = FIO_OPT_C_ENGINE,
		.group = FIO_OPT_G_FILENAME,
	},
	{
		.name = "etcd",
		.lname = "etcd address",
		.type = FIO_OPT_STR_STORE,
		.off1 = offsetof(struct vitastor_fio_options, etcd_address),
		.help = "etcd address(es): HOST:PORT[/v3], several separated by commas",
		.category = FIO_OPT_C_ENGINE,
		.group = FIO_OPT_G_FILENAME,
	},
	{
		.name = "etcd_prefix",
		.lname = "etcd key prefix",
		.type = FIO_OPT_STR_STORE,
		.off1 = offsetof(struct vitastor_fio_options, etcd_prefix),
		.help = "Prefix of vitastor keys in etcd (default /vitastor)",
		.category = FIO_OPT_C_ENGINE,
		.group = FIO_OPT_G_FILENAME,
	},
	{
		.name = "client_op_timeout",
		.lname = "Vitastor client op timeout",
		.type = FIO_OPT_STR_STORE,
		.off1 = offsetof(struct vitastor_fio_options, client_op_timeout),
		.help = "Seconds an OSD may stay silent on requests before it is pinged, then dropped",
		.category = FIO_OPT_C_ENGINE,
		.group = FIO_OPT_G_FILENAME,
	},
	{
		.name = "client_retry_interval",
		.lname = "Vitastor client retry interval",
		.type = FIO_OPT_STR_STORE,
		.off1 = offsetof(struct vitastor_fio_options, client_retry_interval),
		.help = "Milliseconds before a failed request part is tried again",
		.category = FIO_OPT_C_ENGINE,
		.group = FIO_OPT_G_FILENAME,
	},
	{
		.name = "peer_connect_timeout",
		.lname = "Vitastor OSD connect timeout",
		.type = FIO_OPT_STR_STORE,
		.off1 = offsetof(struct vitastor_fio_options, peer_connect_timeout),
		.help = "Seconds a connection to an OSD may take before it is retried",
		.category = FIO_OPT_C_ENGINE,
		.group = FIO_OPT_G_FILENAME,
	},
	{
		.name = "image",
		.lname = "Vitastor image name",
		.type = FIO_OPT_STR_STORE,
		.off1 = offsetof(struct vitastor_fio_options, image),
		.help = "Image to test (instead of -pool/-inode/-size)",
		.category = FIO_OPT_C_ENGINE,
		.group = FIO_OPT_G_FILENAME,
	},
	{
		.name = "pool",
		.lname = "Vitastor pool id",
		.type = FIO_OPT_INT,
		.off1 = offsetof(struct vitastor_fio_options, pool),
		.help = "Pool of the inode to test (with -inode and -size)",
		.category = FIO_OPT_C_ENGINE,
		.group = FIO_OPT_G_FILENAME,
	},
	{
		.name = "inode",
		.lname = "Vitastor inode number",
		.type = FIO_OPT_ULL,
		.off1 = offsetof(struct vitastor_fio_options, inode),
		.help = "Inode to test (with -pool and -size), or a full inode number with pool bits",
		.category = FIO_OPT_C_ENGINE,
		.group = FIO_OPT_G_FILENAME,
	},
	{
		.name = "cluster_log_level",
		.lname = "Vitastor log level",
		.type = FIO_OPT_INT,
		.off1 = offsetof(struct vitastor_fio_options, log_level),
		.help = "Client log level (accepted for compatibility)",
		.category = FIO_OPT_C_ENGINE,
		.group = FIO_OPT_G_FILENAME,
	},
	{
		.name = NULL,
	},
};

struct vitastor_fio_data {
	vitastor_c *cli;
	void *watch;
	uint64_t inode;
	/* Completed io_u's; the first `returned` were handed to fio by the last getevents()
	 * and are dropped at the start of the next one. */
	struct io_u **done;
	unsigned int done_count, done_cap, returned;
};

/* One synchronous wait on a fresh client (setup/init only). */
struct vitastor_fio_wait {
	int finished;
	long retval;
};

static void vitastor_fio_wait_cb(void *opaque, long retval)
{
	struct vitastor_fio_wait *w = opaque;

	w->finished = 1;
	w->retval = retval;
}

static long long vitastor_fio_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Drives `cli` until `w` finishes or the bound runs out; 0 or -ETIMEDOUT. */
static int vitastor_fio_wait(vitastor_c *cli, struct vitastor_fio_wait *w)
{
	long long deadline = vitastor_fio_now_ms() + VITASTOR_FIO_RESOLVE_TIMEOUT_MS;

	while (!w->finished) {
		long long left = deadline - vitastor_fio_now_ms();

		if (left <= 0)
			return -ETIMEDOUT;
		vitastor_c_epoll_handle_events(cli, left > 100 ? 100 : (int)left);
	}
	return 0;
}

static vitastor_c *vitastor_fio_client(struct thread_data *td)
{
	struct vitastor_fio_options *o = td->eo;
	const struct {
		const char *name;
		const char *value;
	} given[] = {
		{ "config_path", o->config_path },
		{ "etcd_address", o->etcd_address },
		{ "etcd_prefix", o->etcd_prefix },
		{ "client_op_timeout", o->client_op_timeout },
		{ "client_retry_interval", o->client_retry_interval },
		{ "peer_connect_timeout", o->peer_connect_timeout },
	};
	const char *kv[2 * sizeof(given) / sizeof(given[0])];
	int n = 0;
	vitastor_c *cli;

	for (size_t i = 0; i < sizeof(given) / sizeof(given[0]); i++) {
		if (given[i].value) {
			kv[n++] = given[i].name;
			kv[n++] = given[i].value;
		}
	}
	cli = vitastor_c_create_epoll_json(kv, n);
	if (!cli)
		log_err("fio: vitastor: cannot create the client (see the message above; "
			"is -etcd or -conf given?)\n");
	return cli;
}

/*
 * Finds what the job works on: the inode number, and the size when it comes from the image.
 * With -image, keeps the watch in *watch (if watch != NULL) for later checks.
 * Returns 0 or an errno with the reason already logged.
 */
static int vitastor_fio_resolve(struct thread_data *td, vitastor_c *cli, uint64_t *inode,
				uint64_t *size, int *readonly, void **watch)
{
	struct vitastor_fio_options *o = td->eo;
	const char *etcd = o->etcd_address ? o->etcd_address : "(from the config file)";
	struct vitastor_fio_wait w = { 0, 0 };
	void *handle;

	/* Option mistakes are reported before anything waits for etcd. */
	if (!o->image && !(o->inode & VITASTOR_INODE_MASK)) {
		log_err("fio: vitastor: give -image=NAME, or -inode=N (with -pool=P and "
			"-size=S)\n");
		return EINVAL;
	}
	vitastor_c_on_ready(cli, vitastor_fio_wait_cb, &w);
	if (vitastor_fio_wait(cli, &w) < 0) {
		log_err("fio: vitastor: cluster state not loaded from etcd %s within %d s\n",
			etcd, VITASTOR_FIO_RESOLVE_TIMEOUT_MS / 1000);
		return ETIMEDOUT;
	}
	if (!o->image) {
		uint64_t num = o->inode;

		if (o->pool)
			num = (num & VITASTOR_INODE_MASK) | ((uint64_t)o->pool << (64 - POOL_ID_BITS));
		if (!(num & VITASTOR_INODE_MASK)) {
			log_err("fio: vitastor: give -image=NAME, or -inode=N (with -pool=P and "
				"-size=S)\n");
			return EINVAL;
		}
		if (!(num >> (64 - POOL_ID_BITS))) {
			log_err("fio: vitastor: -pool is required with -inode=%llu\n",
				(unsigned long long)num);
			return EINVAL;
		}
		*inode = num;
		*size = 0;
		*readonly = 0;
		return 0;
	}
	w.finished = 0;
	vitastor_c_watch_inode(cli, o->image, vitastor_fio_wait_cb, &w);
	if (vitastor_fio_wait(cli, &w) < 0) {
		log_err("fio: vitastor: looking up image %s timed out\n", o->image);
		return ETIMEDOUT;
	}
	if (w.retval < 0) {
		log_err("fio: vitastor: image %s does not exist (etcd %s): %s\n", o->image, etcd,
			strerror((int)-w.retval));
		return (int)-w.retval;
	}
	handle = (void *)w.retval;
	*inode = vitastor_c_inode_get_num(handle);
	*size = vitastor_c_inode_get_size(handle);
	*readonly = vitastor_c_inode_get_readonly(handle);
	if (!*inode) {
		log_err("fio: vitastor: image %s does not exist (etcd %s)\n", o->image, etcd);
		vitastor_c_close_watch(cli, handle);
		return ENOENT;
	}
	if (!*size) {
		/* Size 0 means "take it from -size" to the caller; an image always has one. */
		log_err("fio: vitastor: image %s has size 0\n", o->image);
		vitastor_c_close_watch(cli, handle);
		return EINVAL;
	}
	if (watch)
		*watch = handle;
	else
		vitastor_c_close_watch(cli, handle);
	return 0;
}

static int vitastor_fio_setup(struct thread_data *td)
{
	struct vitastor_fio_data *d = td->io_ops_data;
	vitastor_c *cli = d ? d->cli : NULL;
	uint64_t inode, size;
	int readonly, err;
	struct fio_file *f;
	unsigned int i;

	/* The client's etcd thread would not survive a fork() between setup and the job. */
	td->o.use_thread = 1;

	/* Option mistakes are reported before anything waits for etcd. */
	if (!((struct vitastor_fio_options *)td->eo)->image && !td->o.size) {
		log_err("fio: vitastor: -size is required with -inode\n");
		td_verror(td, EINVAL, "vitastor size");
		return 1;
	}
	if (!cli) {
		cli = vitastor_fio_client(td);
		if (!cli) {
			td_verror(td, EINVAL, "vitastor client");
			return 1;
		}
	}
	err = vitastor_fio_resolve(td, cli, &inode, &size, &readonly, NULL);
	if (!d)
		vitastor_c_destroy(cli);
	if (err) {
		td_verror(td, err, "vitastor image");
		return 1;
	}
	/* Diskless: fio's files are names only; each maps onto the whole image. */
	if (!td->files_index) {
		add_file(td, td->o.filename ? td->o.filename : "vitastor", 0, 0);
		td->o.nr_files = td->o.nr_files ? td->o.nr_files : 1;
		td->o.open_files++;
	}
	for_each_file(td, f, i) {
		if (size) {
			f->real_file_size = size;
		} else {
			/* -pool/-inode: an inode has no size of its own; it ends where this job's
			 * region (-offset, -offset_increment, then -size) ends. */
			f->real_file_size = td->o.size;
			f->real_file_size += get_start_offset(td, f);
		}
		fio_file_set_size_known(f);
	}
	return 0;
}

static int vitastor_fio_init(struct thread_data *td)
{
	struct vitastor_fio_data *d;
	uint64_t size;
	int readonly, err;

	d = calloc(1, sizeof(*d));
	if (!d) {
		td_verror(td, ENOMEM, "vitastor init");
		return 1;
	}
	d->done_cap = td->o.iodepth ? td->o.iodepth : 1;
	d->done = calloc(d->done_cap, sizeof(*d->done));
	d->cli = d->done ? vitastor_fio_client(td) : NULL;
	if (!d->cli) {
		free(d->done);
		free(d);
		td_verror(td, EINVAL, "vitastor client");
		return 1;
	}
	td->io_ops_data = d;
	err = vitastor_fio_resolve(td, d->cli, &d->inode, &size, &readonly, &d->watch);
	if (!err && readonly && td_write(td)) {
		log_err("fio: vitastor: image %s is read-only\n",
			((struct vitastor_fio_options *)td->eo)->image);
		err = EROFS;
	}
	if (err) {
		td_verror(td, err, "vitastor image");
		return 1;
	}
	return 0;
}

static void vitastor_fio_cleanup(struct thread_data *td)
{
	struct vitastor_fio_data *d = td->io_ops_data;

	if (!d)
		return;
	if (d->watch)
		vitastor_c_close_watch(d->cli, d->watch);
	/* Ops still running complete with -ECANCELED into d->done, which is still alive. */
	vitastor_c_destroy(d->cli);
	free(d->done);
	free(d);
	td->io_ops_data = NULL;
}

static void vitastor_fio_complete(struct io_u *io_u, long retval, long expect)
{
	struct vitastor_fio_data *d = io_u->engine_data;

	if (retval < 0) {
		io_u->error = (unsigned int)-retval;
	} else if (retval != expect) {
		/* A short transfer: fio reports it from resid. */
		io_u->resid = io_u->xfer_buflen - (unsigned long long)retval;
		io_u->error = EIO;
	} else {
		io_u->error = 0;
	}
	if (d->done_count == d->done_cap) {
		/* Never expected (fio has at most iodepth io_u's), but never overflow. */
		unsigned int cap = d->done_cap * 2;
		struct io_u **grown = realloc(d->done, cap * sizeof(*grown));

		if (!grown) {
			log_err("fio: vitastor: out of memory for completions\n");
			abort();
		}
		d->done = grown;
		d->done_cap = cap;
	}
	d->done[d->done_count++] = io_u;
}

static void vitastor_fio_rw_cb(void *opaque, long retval)
{
	struct io_u *io_u = opaque;

	vitastor_fio_complete(io_u, retval, (long)io_u->xfer_buflen);
}

static void vitastor_fio_read_cb(void *opaque, long retval, uint64_t version)
{
	struct io_u *io_u = opaque;

	(void)version;
	vitastor_fio_complete(io_u, retval, (long)io_u->xfer_buflen);
}

static void vitastor_fio_status_cb(void *opaque, long retval)
{
	vitastor_fio_complete(opaque, retval, 0);
}

static enum fio_q_status vitastor_fio_queue(struct thread_data *td, struct io_u *io_u)
{
	struct vitastor_fio_data *d = td->io_ops_data;
	/* The library copies the iovec array at submission; only the buffer must live on. */
	struct iovec iov = { .iov_base = io_u->xfer_buf, .iov_len = io_u->xfer_buflen };

	/* An image opened by name follows its name: after a snapshot the name is a new inode
	 * (the old one is the read-only snapshot), and the watch says which. */
	uint64_t inode = d->watch ? vitastor_c_inode_get_num(d->watch) : d->inode;

	io_u->engine_data = d;
	switch (io_u->ddir) {
	case DDIR_READ:
		vitastor_c_read(d->cli, inode, io_u->offset, io_u->xfer_buflen, &iov, 1,
				vitastor_fio_read_cb, io_u);
		break;
	case DDIR_WRITE:
		vitastor_c_write(d->cli, inode, io_u->offset, io_u->xfer_buflen, 0, &iov, 1,
				 vitastor_fio_rw_cb, io_u);
		break;
	case DDIR_TRIM:
		vitastor_c_delete(d->cli, inode, io_u->offset, io_u->xfer_buflen, 0,
				  vitastor_fio_status_cb, io_u);
		break;
	case DDIR_SYNC:
	case DDIR_DATASYNC:
	case DDIR_SYNC_FILE_RANGE:
		/* A cluster SYNC makes every write completed before it durable. */
		vitastor_c_sync(d->cli, vitastor_fio_status_cb, io_u);
		break;
	default:
		io_u->error = EINVAL;
		return FIO_Q_COMPLETED;
	}
	return FIO_Q_QUEUED;
}

/* Ops are sent in queue(); only fio's submit statistics are left to do. */
static int vitastor_fio_commit(struct thread_data *td)
{
	if (td->io_u_queued)
		io_u_mark_submit(td, td->io_u_queued);
	return 0;
}

static int vitastor_fio_getevents(struct thread_data *td, unsigned int min, unsigned int max,
				  const struct timespec *t)
{
	struct vitastor_fio_data *d = td->io_ops_data;
	long long deadline = 0;

	if (d->returned) {
		d->done_count -= d->returned;
		memmove(d->done, d->done + d->returned, d->done_count * sizeof(*d->done));
		d->returned = 0;
	}
	if (t)
		deadline = vitastor_fio_now_ms() + t->tv_sec * 1000 + t->tv_nsec / 1000000;
	/* Whatever is ready now, without blocking; when fio needs completions the wait below
	 * does that too (it returns at once when something is ready), in one epoll_wait. */
	if (d->done_count >= min)
		vitastor_c_epoll_handle_events(d->cli, 0);
	while (d->done_count < min) {
		int wait_ms = -1;

		if (t) {
			long long left = deadline - vitastor_fio_now_ms();

			if (left <= 0)
				break;
			wait_ms = left > INT32_MAX ? INT32_MAX : (int)left;
		}
		vitastor_c_epoll_handle_events(d->cli, wait_ms);
	}
	d->returned = d->done_count < max ? d->done_count : max;
	return (int)d->returned;
}

static struct io_u *vitastor_fio_event(struct thread_data *td, int event)
{
	struct vitastor_fio_data *d = td->io_ops_data;

	return d->done[event];
}

/* Nothing to open or invalidate: the image is reached through the client. */
static int vitastor_fio_open_file(struct thread_data *td, struct fio_file *f)
{
	(void)td;
	(void)f;
	return 0;
}

static int vitastor_fio_invalidate(struct thread_data *td, struct fio_file *f)
{
	(void)td;
	(void)f;
	return 0;
}

static struct ioengine_ops vitastor_fio_ioengine = {
	.name = "vitastor",
	.version = FIO_IOOPS_VERSION,
	/* MEMALIGN: page-aligned buffers; DISKLESSIO: no file to stat or create;
	 * NOEXTEND: an image never grows from a write past its end. */
	.flags = FIO_MEMALIGN | FIO_DISKLESSIO | FIO_NOEXTEND,
	.setup = vitastor_fio_setup,
	.init = vitastor_fio_init,
	.queue = vitastor_fio_queue,
	.commit = vitastor_fio_commit,
	.getevents = vitastor_fio_getevents,
	.event = vitastor_fio_event,
	.cleanup = vitastor_fio_cleanup,
	.open_file = vitastor_fio_open_file,
	.invalidate = vitastor_fio_invalidate,
	.options = vitastor_fio_options,
	.option_struct_size = sizeof(struct vitastor_fio_options),
};

/* The one ops struct: fio writes dlhandle into it and expects the same pointer on every
 * load, so it is static and never copied. */
struct ioengine_ops *vitastor_fio_ops(void);

struct ioengine_ops *vitastor_fio_ops(void)
{
	return &vitastor_fio_ioengine;
}
