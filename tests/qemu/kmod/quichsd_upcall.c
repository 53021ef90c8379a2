// SPDX-License-Identifier: GPL-2.0
/*
 * quichsd_upcall: a kernel consumer of the net/handshake upcall, for quichsd's QEMU tier.
 *
 * Writing one command line to /proc/quichsd_upcall makes kernel sockets, asks userspace
 * (tlshd or quichsd daemon) for handshakes on them through tls_{client,server}_hello_*(),
 * waits for every DONE and keeps a report that a read() of the same open file returns.
 *
 *   <tcp|quic> <client|server|pair> <anon|x509|psk> [key=value ...]
 *
 * keys: n (handshakes in a row, default 1), timeout (ms handed to the daemon, 0 = none),
 *       wait (ms we wait for DONE before tls_handshake_cancel(), default timeout + 5000,
 *       or 30000), peername, psk (key serial), cert, privkey, keyring (serials),
 *       alpn (QUIC only, default "sample"), port (QUIC pair listener, default 0 = any),
 *       data (TCP pair only: after both handshakes succeed, send this many bytes client to
 *       server and then server to client through the sockets, which carry kTLS by then),
 *       netns (a pid: the listener, and so the server end, lives in that process's network
 *       namespace, whose handshake requests only a daemon there sees; the client end stays
 *       in init_net) with addr (the IPv4 address the listener binds, reachable from
 *       init_net, e.g. over a veth pair; default loopback).
 *
 * "client"/"server" submit one side; the other end of the connection exists but nobody
 * serves it (for status checks). "pair" submits both ends of one loopback connection.
 * Report lines: "side=<client|server> status=<negative errno or 0> peerid=<serial>" for
 * n == 1 ("error=<errno> step=<what failed>" before them when making the sockets failed),
 * then a summary "done=<n> ok=<k> cancelled=<c> first_status=<s> usecs=<elapsed>"
 * (cancelled: requests that got no DONE before our deadline and were withdrawn).
 * With data=N a line "data=<N> c2s=<r> s2c=<r> ulp=<client ulp>/<server ulp>" comes first, r being
 * the bytes that arrived intact or a negative errno (-EBADMSG: bytes arrived but differ).
 */
#include <linux/completion.h>
#include <linux/inet.h>
#include <linux/pid.h>
#include <linux/kernel.h>
#include <linux/ktime.h>
#include <linux/module.h>
#include <linux/net.h>
#include <linux/proc_fs.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <net/handshake.h>
#include <net/net_namespace.h>
#include <net/tcp.h>
#include <net/sock.h>

#define IPPROTO_QUIC_NUM	261
#define SOL_QUIC_NUM		288
#define QUIC_SOCKOPT_ALPN_NUM	11	/* uapi <linux/quic.h>; also csrc/quic_abi.h */
#define REPORT_MAX		4096

enum transport { T_TCP, T_QUIC };
enum auth { A_ANON, A_X509, A_PSK };

struct command {
	enum transport transport;
	bool client, server;
	enum auth auth;
	unsigned int n, timeout_ms, wait_ms;
	char peername[256];
	char alpn[64];
	key_serial_t psk, cert, privkey, keyring;
	u16 port;
	unsigned int data;
	unsigned int netns_pid;	/* 0: init_net */
	__be32 addr;		/* 0: loopback */
};

struct side {
	struct completion done;
	int status;
	key_serial_t peerid;
	bool submitted;
	bool cancelled;		/* no DONE came: we withdrew the request */
};

struct report {
	size_t len;
	char text[REPORT_MAX];
};

static void report_add(struct report *r, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	r->len += vscnprintf(r->text + r->len, REPORT_MAX - r->len, fmt, ap);
	va_end(ap);
}

static void on_done(void *data, int status, key_serial_t peerid)
{
	struct side *s = data;

	s->status = status;
	s->peerid = peerid;
	complete(&s->done);
}

static int submit(const struct command *c, struct socket *sock, bool client,
		  struct side *s)
{
	struct tls_handshake_args args = {
		.ta_sock = sock,
		.ta_done = on_done,
		.ta_data = s,
		.ta_timeout_ms = c->timeout_ms,
		.ta_keyring = c->keyring,
		.ta_my_cert = c->cert,
		.ta_my_privkey = c->privkey,
		.ta_peername = c->peername[0] ? c->peername : NULL,
	};
	int err;

	init_completion(&s->done);
	s->status = 0;
	s->peerid = 0;
	if (c->auth == A_PSK && c->psk) {
		args.ta_my_peerids[0] = c->psk;
		args.ta_num_peerids = 1;
	}
	if (client) {
		if (c->auth == A_ANON)
			err = tls_client_hello_anon(&args, GFP_KERNEL);
		else if (c->auth == A_X509)
			err = tls_client_hello_x509(&args, GFP_KERNEL);
		else
			err = tls_client_hello_psk(&args, GFP_KERNEL);
	} else {
		if (c->auth == A_PSK)
			err = tls_server_hello_psk(&args, GFP_KERNEL);
		else
			err = tls_server_hello_x509(&args, GFP_KERNEL);
	}
	s->submitted = !err;
	if (err)
		s->status = err;
	return err;
}

/* Wait for DONE; on our own deadline cancel the request as NFS does. */
static void await(const struct command *c, struct socket *sock, struct side *s)
{
	long left;

	if (!s->submitted)
		return;
	left = wait_for_completion_killable_timeout(&s->done, msecs_to_jiffies(c->wait_ms));
	if (left > 0)
		return;
	if (tls_handshake_cancel(sock->sk)) {
		s->status = left == 0 ? -ETIMEDOUT : -EINTR;
		s->cancelled = true;
	} else
		wait_for_completion(&s->done);	/* DONE raced our cancel: it will come */
}

static int make_file(struct socket *sock, struct file **filp)
{
	*filp = sock_alloc_file(sock, 0, NULL);
	if (IS_ERR(*filp)) {
		int err = PTR_ERR(*filp);
		*filp = NULL;
		return err;
	}
	return 0;
}

static int loopback(struct sockaddr_in *a, u16 port, __be32 addr)
{
	memset(a, 0, sizeof(*a));
	a->sin_family = AF_INET;
	a->sin_addr.s_addr = addr ? addr : htonl(INADDR_LOOPBACK);
	a->sin_port = htons(port);
	return sizeof(*a);
}

static int set_alpn(struct socket *sock, const char *alpn)
{
	return sock->ops->setsockopt(sock, SOL_QUIC_NUM, QUIC_SOCKOPT_ALPN_NUM,
				     KERNEL_SOCKPTR((void *)alpn), strlen(alpn));
}

/* A listener on loopback, bound to an ephemeral (or the given) port; a failing step is
 * named in the report. */
static int make_listener(const struct command *c, struct socket **lsock, struct sockaddr_in *addr,
			 struct report *r)
{
	bool quic = c->transport == T_QUIC;
	int len = loopback(addr, c->port, c->addr), err;
	const char *step = "netns";
	struct net *net = &init_net;

	if (c->netns_pid) {
		/* A kernel socket does not pin its namespace: the daemon in it keeps it alive. */
		net = get_net_ns_by_pid(c->netns_pid);
		if (IS_ERR(net)) {
			err = PTR_ERR(net);
			goto report;
		}
	}
	step = "socket";
	err = sock_create_kern(net, AF_INET, quic ? SOCK_DGRAM : SOCK_STREAM,
			       quic ? IPPROTO_QUIC_NUM : IPPROTO_TCP, lsock);
	if (c->netns_pid)
		put_net(net);
	if (err)
		goto report;
	step = "alpn";
	if (quic) {
		err = set_alpn(*lsock, c->alpn);
		if (err)
			goto fail;
	}
	step = "bind";
	err = kernel_bind(*lsock, (struct sockaddr *)addr, len);
	if (err)
		goto fail;
	step = "listen";
	err = kernel_listen(*lsock, 16);
	if (err)
		goto fail;
	step = "getsockname";
	err = kernel_getsockname(*lsock, (struct sockaddr *)addr);
	if (err < 0)
		goto fail;
	/* A QUIC accept waits for a ClientHello that may never come: bound it. */
	(*lsock)->sk->sk_rcvtimeo = msecs_to_jiffies(c->wait_ms);
	return 0;
fail:
	sock_release(*lsock);
	*lsock = NULL;
report:
	report_add(r, "error=%d step=listener-%s\n", err, step);
	return err;
}

static u8 pattern_byte(size_t i, int direction)
{
	return (u8)(i * 7 + direction * 101 + (i >> 8));
}

/* Both ends are served by this one thread, so the bytes go in chunks, each read before
 * the next is sent: a whole N sent at once can exceed what the path buffers while nobody
 * reads (over a veth pair the receive window stays small until the reader reads), and
 * the send would then wait out its timeout. */
#define EXCHANGE_CHUNK	(16U << 10)

/* n bytes received into buf; n, or a negative errno. */
static int receive_all(struct socket *to, u8 *buf, size_t n)
{
	struct msghdr msg;
	struct kvec vec;
	size_t done = 0;
	int ret;

	while (done < n) {
		memset(&msg, 0, sizeof(msg));
		vec.iov_base = buf + done;
		vec.iov_len = n - done;
		ret = kernel_recvmsg(to, &msg, &vec, 1, n - done, MSG_WAITALL);
		if (ret <= 0)
			return ret ?: -ECONNRESET;
		done += ret;
	}
	return (int)n;
}

/* N bytes from one end to the other; the bytes that arrived intact, or a negative errno. */
static int send_and_check(struct socket *from, struct socket *to, unsigned int n, int direction)
{
	struct msghdr msg;
	struct kvec vec;
	size_t i, off, len;
	u8 *out, *in;
	int ret;

	out = kvmalloc(n, GFP_KERNEL);
	in = kvzalloc(n, GFP_KERNEL);
	ret = -ENOMEM;
	if (!out || !in)
		goto free;
	for (i = 0; i < n; i++)
		out[i] = pattern_byte(i, direction);
	for (off = 0; off < n; off += len) {
		len = min_t(size_t, n - off, EXCHANGE_CHUNK);
		memset(&msg, 0, sizeof(msg));
		vec.iov_base = out + off;
		vec.iov_len = len;
		ret = kernel_sendmsg(from, &msg, &vec, 1, len);
		if (ret < 0)
			goto free;
		if (ret != len) {
			ret = -EAGAIN;	/* a short send: the chunk did not go out in time */
			goto free;
		}
		ret = receive_all(to, in + off, len);
		if (ret < 0)
			goto free;
	}
	ret = memcmp(in, out, n) ? -EBADMSG : (int)n;
free:
	kvfree(out);
	kvfree(in);
	return ret;
}

static const char *ulp_name(struct socket *sock)
{
	const struct tcp_ulp_ops *ops = inet_csk(sock->sk)->icsk_ulp_ops;

	return ops ? ops->name : "none";
}

static void exchange(const struct command *c, struct socket *csock, struct socket *ssock,
		     struct report *r)
{
	int c2s, s2c;

	csock->sk->sk_rcvtimeo = ssock->sk->sk_rcvtimeo = msecs_to_jiffies(c->wait_ms);
	csock->sk->sk_sndtimeo = ssock->sk->sk_sndtimeo = msecs_to_jiffies(c->wait_ms);
	c2s = send_and_check(csock, ssock, c->data, 0);
	s2c = send_and_check(ssock, csock, c->data, 1);
	report_add(r, "data=%u c2s=%d s2c=%d ulp=%s/%s\n", c->data, c2s, s2c, ulp_name(csock), ulp_name(ssock));
}

/* One connection: the client end connected, submitted if asked, the server end
 * accepted and submitted if asked, both awaited. */
static int one_connection(const struct command *c, struct socket *lsock,
			  struct sockaddr_in *addr, struct side *cs, struct side *ss,
			  struct report *r)
{
	const char *step = "socket";
	bool quic = c->transport == T_QUIC;
	struct socket *csock = NULL, *ssock = NULL;
	struct file *cfile = NULL, *sfile = NULL;
	int err;

	cs->submitted = ss->submitted = false;
	cs->cancelled = ss->cancelled = false;
	cs->status = ss->status = 0;
	err = sock_create_kern(&init_net, AF_INET, quic ? SOCK_DGRAM : SOCK_STREAM,
			       quic ? IPPROTO_QUIC_NUM : IPPROTO_TCP, &csock);
	if (err)
		goto report;
	step = "file";
	err = make_file(csock, &cfile);
	if (err) {
		sock_release(csock);
		goto report;
	}
	step = "alpn";
	if (quic) {
		err = set_alpn(csock, c->alpn);
		if (err)
			goto out;
	}
	step = "connect";
	err = kernel_connect(csock, (struct sockaddr *)addr, sizeof(*addr), 0);
	if (err)
		goto out;
	if (!quic) {
		/* TCP: the connection exists now; accept its server end before any upcall. */
		step = "accept";
		err = kernel_accept(lsock, &ssock, 0);
		if (err)
			goto out;
		err = make_file(ssock, &sfile);
		if (err) {
			sock_release(ssock);
			goto out;
		}
	}
	if (c->client)
		submit(c, csock, true, cs);
	if (quic && c->server && (!c->client || cs->submitted)) {
		/* QUIC: the listener hands out a connection once the ClientHello arrives. */
		step = "accept";
		err = kernel_accept(lsock, &ssock, 0);
		if (err)
			goto wait;
		ssock->sk->sk_rcvtimeo = MAX_SCHEDULE_TIMEOUT;	/* inherited from the listener */
		err = make_file(ssock, &sfile);
		if (err) {
			sock_release(ssock);
			goto wait;
		}
	}
	if (c->server && ssock)
		submit(c, ssock, false, ss);
wait:
	await(c, csock, cs);
	if (ssock)
		await(c, ssock, ss);
	if (!quic && c->data && ssock && c->client && c->server && !cs->status && !ss->status)
		exchange(c, csock, ssock, r);
out:
	if (sfile)
		fput(sfile);
	if (cfile)
		fput(cfile);
report:
	if (err && c->n == 1)
		report_add(r, "error=%d step=%s\n", err, step);
	return err;
}

static int run(const struct command *c, struct report *r)
{
	struct sockaddr_in addr;
	struct socket *lsock;
	struct side cs, ss;
	unsigned int i, ok = 0, cancelled = 0;
	int first = 0, err;
	ktime_t start;

	err = make_listener(c, &lsock, &addr, r);
	if (err)
		return 0;
	start = ktime_get();
	for (i = 0; i < c->n; i++) {
		err = one_connection(c, lsock, &addr, &cs, &ss, r);
		if (c->n == 1) {
			if (c->client)
				report_add(r, "side=client status=%d peerid=%d\n", cs.status, cs.peerid);
			if (c->server)
				report_add(r, "side=server status=%d peerid=%d\n", ss.status, ss.peerid);
		}
		cancelled += cs.cancelled + ss.cancelled;
		if (!err && (!c->client || cs.status == 0) && (!c->server || ss.status == 0))
			ok++;
		else if (!first)
			first = err ?: (c->client && cs.status) ? cs.status : ss.status;
		if (fatal_signal_pending(current))
			break;
	}
	report_add(r, "done=%u ok=%u cancelled=%u first_status=%d usecs=%lld\n", i, ok, cancelled, first,
		   ktime_us_delta(ktime_get(), start));
	sock_release(lsock);
	return 0;
}

static int parse(char *line, struct command *c)
{
	char *word, *value;
	unsigned int field = 0, v;
	int err = 0;

	memset(c, 0, sizeof(*c));
	c->n = 1;
	c->wait_ms = 0;
	strscpy(c->alpn, "sample", sizeof(c->alpn));
	while (!err && (word = strsep(&line, " \t\n")) != NULL) {
		if (!*word)
			continue;
		switch (field++) {
		case 0:
			if (!strcmp(word, "tcp"))
				c->transport = T_TCP;
			else if (!strcmp(word, "quic"))
				c->transport = T_QUIC;
			else
				err = -EINVAL;
			continue;
		case 1:
			c->client = !strcmp(word, "client") || !strcmp(word, "pair");
			c->server = !strcmp(word, "server") || !strcmp(word, "pair");
			if (!c->client && !c->server)
				err = -EINVAL;
			continue;
		case 2:
			if (!strcmp(word, "anon"))
				c->auth = A_ANON;
			else if (!strcmp(word, "x509"))
				c->auth = A_X509;
			else if (!strcmp(word, "psk"))
				c->auth = A_PSK;
			else
				err = -EINVAL;
			continue;
		}
		value = strchr(word, '=');
		if (!value)
			return -EINVAL;
		*value++ = '\0';
		if (!strcmp(word, "peername")) {
			strscpy(c->peername, value, sizeof(c->peername));
			continue;
		}
		if (!strcmp(word, "alpn")) {
			strscpy(c->alpn, value, sizeof(c->alpn));
			continue;
		}
		if (!strcmp(word, "addr")) {
			if (!in4_pton(value, -1, (u8 *)&c->addr, -1, NULL))
				return -EINVAL;
			continue;
		}
		err = kstrtouint(value, 0, &v);
		if (err)
			break;
		if (!strcmp(word, "n"))
			c->n = v;
		else if (!strcmp(word, "timeout"))
			c->timeout_ms = v;
		else if (!strcmp(word, "wait"))
			c->wait_ms = v;
		else if (!strcmp(word, "psk"))
			c->psk = v;
		else if (!strcmp(word, "cert"))
			c->cert = v;
		else if (!strcmp(word, "privkey"))
			c->privkey = v;
		else if (!strcmp(word, "keyring"))
			c->keyring = v;
		else if (!strcmp(word, "port"))
			c->port = v;
		else if (!strcmp(word, "data"))
			c->data = v;
		else if (!strcmp(word, "netns"))
			c->netns_pid = v;
		else
			err = -EINVAL;
	}
	if (field < 3 || !c->n)
		return -EINVAL;
	if (c->auth == A_ANON && c->server && !c->client)
		return -EINVAL;		/* the API has no anonymous server */
	if (c->data && (c->transport != T_TCP || !c->client || !c->server || c->data > (16U << 20)))
		return -EINVAL;		/* data=N: a TCP pair, at most 16 MiB */
	if (!c->wait_ms)
		c->wait_ms = c->timeout_ms ? c->timeout_ms + 5000 : 30000;
	return err;
}

static int upcall_open(struct inode *inode, struct file *file)
{
	file->private_data = kzalloc(sizeof(struct report), GFP_KERNEL);
	return file->private_data ? 0 : -ENOMEM;
}

static int upcall_release(struct inode *inode, struct file *file)
{
	kfree(file->private_data);
	return 0;
}

static ssize_t upcall_write(struct file *file, const char __user *buf, size_t len, loff_t *off)
{
	struct report *r = file->private_data;
	struct command c;
	char line[512];
	int err;

	if (len >= sizeof(line))
		return -EINVAL;
	if (copy_from_user(line, buf, len))
		return -EFAULT;
	line[len] = '\0';
	err = parse(line, &c);
	if (err)
		return err;
	r->len = 0;
	err = run(&c, r);
	return err ? err : len;
}

static ssize_t upcall_read(struct file *file, char __user *buf, size_t len, loff_t *off)
{
	struct report *r = file->private_data;

	return simple_read_from_buffer(buf, len, off, r->text, r->len);
}

static const struct proc_ops upcall_ops = {
	.proc_open = upcall_open,
	.proc_release = upcall_release,
	.proc_write = upcall_write,
	.proc_read = upcall_read,
	.proc_lseek = default_llseek,
};

static struct proc_dir_entry *entry;

static int __init upcall_init(void)
{
	entry = proc_create("quichsd_upcall", 0600, NULL, &upcall_ops);
	return entry ? 0 : -ENOMEM;
}

static void __exit upcall_exit(void)
{
	proc_remove(entry);
}

module_init(upcall_init);
module_exit(upcall_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("quichsd QEMU tier: a kernel consumer of the handshake upcall");
