/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The connection I/O both sides of the splitter share (nghttpx's
 * shrpx_connection): socket, TLS, nghttp2 session, reads and writes through
 * per-worker buffers. Each side plugs in a const h2_conn_ops table.
 * Invariant: nothing is freed inside a callback; a connection is killed
 * (marked) there and destroyed by h2_conn_flush().
 */
#ifndef H2SPLIT_H2_CONN_H
#define H2SPLIT_H2_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <nghttp2/nghttp2.h>
#include <openssl/ssl.h>

struct h2_blocks;
struct h2_conn;
struct loop;
struct worker_stats;

/* Output: what a send leaves is kept per connection and nothing more is
 * serialized until it is gone. Input: at most H2_READS_PER_EVENT reads of
 * a plain socket per event, so one busy peer cannot starve the others. */
#define H2_WBUF_SIZE (128 * 1024)
#define H2_RBUF_SIZE (128 * 1024)
#define H2_READS_PER_EVENT 4
/* One copy per byte: a DATA payload of at least H2_REF_MIN bytes is not
 * copied into wbuf but written from its chain's blocks with the frame
 * headers around it in one sendmsg(); one write carries at most
 * H2_OUT_MAX bytes in H2_IOV_MAX pieces. */
#define H2_REF_MIN 2048
#define H2_OUT_MAX H2_WBUF_SIZE
#define H2_IOV_MAX 64

/* What one side (downstream, upstream) does its own way. */
struct h2_conn_ops {
	const char *side;  /* "downstream" or "upstream", for logs */
	bool counts_bytes; /* its bytes are the client's (ST_BYTES_IN, ST_BYTES_OUT) */
	/* nghttp2_session_mem_recv() failed with |rv|. NULL: nothing to add. */
	void (*recv_failed)(struct h2_conn *c, int rv);
	/* End it: a write failed (|err| -errno), or both sides are done (0).
	 * |why|: a static string. Must kill |c| (h2_conn_kill()). */
	void (*end)(struct h2_conn *c, const char *why, int err);
	/* A flush of a live connection is over. NULL: nothing to do. */
	void (*flushed)(struct h2_conn *c);
	/* True: write nothing in this flush (the side flags it dirty again
	 * when the hold ends). NULL: never held. */
	bool (*hold)(struct h2_conn *c);
	/* Free |c| and what it owns (from h2_conn_flush() of a killed one). */
	void (*destroy)(struct h2_conn *c);
};

/* What every connection of one worker shares. */
struct h2_conn_io {
	struct loop *loop;	    /* borrowed */
	struct worker_stats *stats; /* borrowed */
	uint8_t *rbuf, *wbuf;	    /* owned: H2_RBUF_SIZE, H2_WBUF_SIZE bytes */
	size_t wlen;		    /* bytes serialized into wbuf */
	/* The write being assembled: wbuf[wmark, wlen) is not in iov yet;
	 * iov[] points into wbuf and into held blocks; out: its bytes. */
	struct iovec iov[H2_IOV_MAX];
	unsigned niov;
	size_t wmark, out;
	struct h2_blocks *blocks; /* borrowed: held while a write points into them */
	struct h2_conn *dirty;	  /* borrowed: to flush or destroy, LIFO */
	/* The owner's flush, when no loop pass hook runs it (NULL: one does). */
	void (*flush)(void *arg);
	void *flush_arg;
};

struct h2_conn {
	const struct h2_conn_ops *ops;
	struct h2_conn_io *io;	  /* borrowed */
	int fd;			  /* owned */
	nghttp2_session *session; /* owned by the side (deleted before h2_conn_fini()) */
	SSL *ssl;		  /* owned; NULL: cleartext */
	uint8_t *pend;		  /* owned: bytes the last send() left */
	size_t pend_len, pend_off;
	uint32_t events;     /* the epoll mask we asked for */
	bool io_ready;	     /* connected (and TLS done): may read and write */
	bool want_out;	     /* TLS needs the socket writable to go on */
	bool dirty;	     /* on io->dirty */
	bool dead;	     /* to be destroyed by h2_conn_flush() */
	uint32_t fatal_code; /* GOAWAY code for a receive error we raised (0: derive) */
	struct h2_conn *dirty_next;
};

/* Allocate the shared buffers. 0 or -ENOMEM; h2_conn_io_fini() either way. */
int h2_conn_io_init(struct h2_conn_io *io, struct loop *loop, struct worker_stats *stats);
void h2_conn_io_fini(struct h2_conn_io *io);
/* The next connection to flush (taken off the list), or NULL. */
struct h2_conn *h2_conn_next_dirty(struct h2_conn_io *io);

/* Flush (or destroy) |c| in the owner's next flush. */
void h2_conn_dirty(struct h2_conn *c);
/* Destroy |c| in the next flush; its callbacks do nothing more. */
void h2_conn_kill(struct h2_conn *c);
/* Feed |len| received bytes to the session. On a protocol error: log, tell
 * ops->recv_failed, GOAWAY (best effort) and -EPROTO; else 0. */
int h2_conn_recv(struct h2_conn *c, const uint8_t *buf, size_t len);
/* Read what the socket has into the session. 0, or -errno (EOF: -EPIPE). */
int h2_conn_read(struct h2_conn *c);
/* Write what is pending and what the session has to send, until the socket
 * is full. 0, or -errno on a write error. */
int h2_conn_write(struct h2_conn *c);
/* Destroy |c| if killed; else write, end it on a write error or when both
 * sides are done, and ask for EPOLLOUT while output is pending. */
void h2_conn_flush(struct h2_conn *c);
/* Free the I/O half (not the session). */
void h2_conn_fini(struct h2_conn *c);
/* TLS (upstream connections): a client context with ALPN h2 that verifies
 * peers against |ca_file| (NULL: the system's store); NULL on failure
 * (logged). */
SSL_CTX *h2_conn_tls_ctx_new(const char *ca_file);
/* A TLS client on c->fd that verifies the peer as |host|. 0 or -ENOMEM. */
int h2_conn_tls_start(struct h2_conn *c, SSL_CTX *ctx, const char *host);
/* One handshake step: 1 done (h2 selected), 0 in progress (the events it
 * waits for are asked for), -EPROTO failed (|*why|: a static string;
 * a failed verification of |name| is logged). */
int h2_conn_tls_handshake(struct h2_conn *c, const char *name, const char **why);
/* nghttp2 send callback for both sides (user_data: the h2_conn). */
ssize_t h2_conn_send_cb(nghttp2_session *session, const uint8_t *data, size_t len, int flags,
			void *user_data);
/* Room for a whole DATA frame of |len| payload bytes in the write buffer:
 * NULL means NGHTTP2_ERR_WOULDBLOCK. The caller writes exactly 9 + len bytes
 * there and then calls h2_conn_commit(io, 9 + len). */
static inline uint8_t *h2_conn_frame_room(struct h2_conn_io *io, size_t len)
{
	if (io->wlen + 9 + len > H2_WBUF_SIZE || io->out + 9 + len > H2_OUT_MAX)
		return NULL;
	return io->wbuf + io->wlen;
}

/* Room for a DATA frame of |len| payload bytes written in place from up to
 * |pieces| pieces of held blocks (h2_conn_ref()), with |hdr| bytes of frame
 * header and padding in wbuf; false means NGHTTP2_ERR_WOULDBLOCK. */
static inline bool h2_conn_ref_room(const struct h2_conn_io *io, size_t hdr, size_t len,
				    unsigned pieces)
{
	return io->blocks && io->wlen + hdr <= H2_WBUF_SIZE && io->out + hdr + len <= H2_OUT_MAX &&
	       io->niov + 2 * pieces + 2 <= H2_IOV_MAX;
}

/* Write |len| bytes at |p| in place, after what wbuf holds so far; |p| must
 * stay valid until the write is done (a held block: h2_blocks_hold()). */
void h2_conn_ref(struct h2_conn_io *io, const uint8_t *p, size_t len);

/* The end of a loop callback: flush now unless the pass hook will. */
static inline void h2_conn_kick(struct h2_conn_io *io)
{
	if (io->flush)
		io->flush(io->flush_arg);
}

static inline void h2_conn_commit(struct h2_conn_io *io, size_t n)
{
	io->wlen += n;
	io->out += n;
}

#endif
