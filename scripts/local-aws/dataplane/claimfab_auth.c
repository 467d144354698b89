/*
 * claimfab_auth: mosquitto 2.0 plugin (plugin API v5) for claimfab's local AWS IoT data plane.
 *
 * This file owns the broker side of "who is asking" (see service.py and authorizer.py beside
 * it for the other side, and ensure-dataplane.sh beside it for how it is built):
 *
 *   * Connections. Every TLS client is known by its certificate id, the SHA-256 (hex) of its
 *     certificate's DER encoding (AWS IoT's certificateId), from
 *     mosquitto_client_certificate(), and by its MQTT client id (at most 128 bytes, AWS IoT's
 *     quota). Each accepted CONNECT gets a serial number (counting from a random start, so
 *     never one the service saw before a broker restart), kept in a table with the client's
 *     context, client id and certificate id until MOSQ_EVT_DISCONNECT for that context
 *     (mosquitto 2.0.11 fires it once per connection: DISCONNECT, socket error, keepalive
 *     timeout, kick, and for the old context when a new CONNECT takes its client id over,
 *     after the new one's BASIC_AUTH). The serial is the connection's name towards the
 *     service ("conn"), so a context address reused by a later client never inherits a
 *     decision or a reply.
 *   * Authorization. Every decision is delegated to the fleet-provisioning service over a
 *     Unix socket: one JSON line out ({"op": "connect"|"publish"|"publish_retained"|
 *     "subscribe"|"receive"|"disconnect"|"next_kick", "conn": SERIAL, "cert": CERT_ID, "client": CLIENT_ID,
 *     "topic": T}), one line back ("allow", "deny" or "disconnect"; for next_kick "none" or
 *     a serial). The call is blocking (mosquitto runs plugins on its single thread) and
 *     bounded by a send/receive timeout (plugin_opt_timeout_ms, default 5000); any error or
 *     timeout is a denial.
 *       - connect (MOSQ_EVT_BASIC_AUTH, called for every CONNECT since the listener does not
 *         use use_identity_as_username): deny closes the socket without a CONNACK
 *         (we return an error other than MOSQ_ERR_AUTH, so mosquitto sends none), as AWS IoT
 *         does for an unauthorized connection.
 *       - publish (ACL check MOSQ_ACL_WRITE; publish_retained when the RETAIN flag is set, which
 *         AWS IoT authorizes with iot:RetainPublish too) and subscribe (MOSQ_ACL_SUBSCRIBE):
 *         AWS IoT closes the connection on an unauthorized publish or subscribe, and on a
 *         topic longer than its 256-byte quota. mosquitto 2.0.11
 *         disconnects a client whenever the WRITE or SUBSCRIBE check returns an error other
 *         than MOSQ_ERR_ACL_DENIED (handle__publish / handle__subscribe return it and the
 *         read loop calls do_disconnect), so "disconnect" is answered with MOSQ_ERR_AUTH.
 *       - receive (MOSQ_ACL_READ): mosquitto 2.0.11 calls it per subscriber, synchronously,
 *         from subs__send while the publish is being routed, with the subscriber's context,
 *         the topic and the payload (properties are NULL). A denial drops the message for
 *         that subscriber only, as AWS IoT does for iot:Receive ("checked every time a
 *         message is delivered to a client").
 *   * The provisioning API. A device's PUBLISH on $aws/certificates/... or
 *     $aws/provisioning-templates/... passes the WRITE check (iot:Publish), then
 *     MOSQ_EVT_MESSAGE (which in 2.0.11 may replace the topic: plugin__handle_message
 *     stores event.topic back into the message before it is routed) rewrites it to
 *     $claimfab/request/SERIAL/CERT_ID/HEX(CLIENT_ID)/ORIGINAL_TOPIC, which only the service
 *     subscribes to. The service answers on $claimfab/reply/SERIAL/REPLY_TOPIC. AWS IoT
 *     "returns the device provisioning MQTT API results through the same MQTT connection
 *     used to publish the API request" (developer guide, fleet-provision-api.html), whether
 *     or not it subscribed: nucleus lite 2.3 and later never subscribes to them. So the reply
 *     is not routed by subscription: MOSQ_EVT_MESSAGE keeps a copy and drops the service's
 *     message (MOSQ_ERR_ACL_DENIED: no subscriber sees it, the service still gets its
 *     PUBACK), and the next MOSQ_EVT_TICK delivers the copy on REPLY_TOPIC to that
 *     connection alone, if it is still the same connection (same serial: a client that
 *     reconnected, or another that took its client id over, gets nothing) and iot:Receive
 *     allows it, with mosquitto_broker_publish_copy() to its client id, QoS 1. Delivering
 *     from the tick matters: 2.0.11 queues a plugin publish and sends it at the start of the
 *     next main-loop pass, right after the tick, with no packet handled in between, so the
 *     client id still names the connection that was checked; and that path skips both the
 *     subscriptions and the READ check (single_publish), hence the explicit receive check.
 *     No routed message on a $aws/certificates/ or $aws/provisioning-templates/ topic reaches
 *     anyone: their READ checks are always denied.
 *   * Certificates made inactive. AWS IoT "disconnects all devices that used that
 *     certificate to connect" once a certificate leaves ACTIVE (API_UpdateCertificate). At
 *     most every KICK_POLL_MS the tick asks the service for connections to close
 *     (next_kick) and kicks them with mosquitto_kick_client_by_clientid (safe from the tick,
 *     outside packet handling).
 *   * The service's own client (plugin_opt_service_cert_id) is allowed everything without a
 *     round trip; only it may publish or subscribe under $claimfab/.
 *
 * Options: plugin_opt_socket PATH (required), plugin_opt_service_cert_id HEX (required),
 *          plugin_opt_timeout_ms N.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

#define REQUEST_PREFIX "$claimfab/request/"
#define REPLY_PREFIX "$claimfab/reply/"
#define INTERNAL_PREFIX "$claimfab/"
#define KICK_POLL_MS 200
/* AWS IoT Core quotas: client ids of at most 128 bytes, topics of at most 256 bytes. */
#define MAX_CLIENT_ID 128
#define MAX_TOPIC 256

enum answer { ANSWER_DENY = 0, ANSWER_ALLOW = 1, ANSWER_DISCONNECT = 2 };

/* One accepted client connection (the service's own is not kept). */
struct connection {
	struct mosquitto *client;
	unsigned long long serial;
	char *client_id;
	char *cert_id;
};

/* A provisioning reply waiting for the next tick. */
struct reply {
	unsigned long long serial;
	char *topic;
	void *payload;
	uint32_t payloadlen;
	struct reply *next;
};

static mosquitto_plugin_id_t *plugin_id;
static char *socket_path;
static char *service_cert_id;
static int timeout_ms = 5000;
static int sock = -1;

/* Live connections: a few thousand at most on a test bed, so a plain array scanned. */
static struct connection *connections;
static size_t connection_count, connection_cap;
static unsigned long long next_serial = 1;

static struct reply *replies_head, *replies_tail;
static struct timespec last_kick_poll;

/* ---------------------------------------------------------------------------------------- */
/* Small string helpers                                                                       */
/* ---------------------------------------------------------------------------------------- */

struct buf {
	char *data;
	size_t len, cap;
};

static bool buf_put(struct buf *b, const char *s, size_t n)
{
	if(b->len + n + 1 > b->cap){
		size_t cap = b->cap ? b->cap : 256;
		while(b->len + n + 1 > cap) cap *= 2;
		char *p = realloc(b->data, cap);
		if(!p) return false;
		b->data = p;
		b->cap = cap;
	}
	memcpy(b->data + b->len, s, n);
	b->len += n;
	b->data[b->len] = '\0';
	return true;
}

static bool buf_str(struct buf *b, const char *s)
{
	return buf_put(b, s, strlen(s));
}

/* A JSON string literal (UTF-8 passes through; mosquitto has already validated it). */
static bool buf_json(struct buf *b, const char *s)
{
	char esc[8];
	if(!buf_put(b, "\"", 1)) return false;
	for(const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++){
		if(*p == '"' || *p == '\\'){
			esc[0] = '\\';
			esc[1] = (char)*p;
			if(!buf_put(b, esc, 2)) return false;
		}else if(*p < 0x20){
			snprintf(esc, sizeof(esc), "\\u%04x", *p);
			if(!buf_put(b, esc, 6)) return false;
		}else{
			if(!buf_put(b, (const char *)p, 1)) return false;
		}
	}
	return buf_put(b, "\"", 1);
}

static bool starts_with(const char *s, const char *prefix)
{
	return s && strncmp(s, prefix, strlen(prefix)) == 0;
}

static char *hex_encode(const unsigned char *data, size_t n)
{
	static const char digits[] = "0123456789abcdef";
	char *out = mosquitto_malloc(2 * n + 1);
	if(!out) return NULL;
	for(size_t i = 0; i < n; i++){
		out[2 * i] = digits[data[i] >> 4];
		out[2 * i + 1] = digits[data[i] & 0xf];
	}
	out[2 * n] = '\0';
	return out;
}

/* Certificate id of a client: SHA-256 hex of its certificate's DER; NULL without one. */
static char *client_cert_id(struct mosquitto *client)
{
	X509 *cert = mosquitto_client_certificate(client);
	if(!cert) return NULL;
	unsigned char *der = NULL;
	int len = i2d_X509(cert, &der);
	X509_free(cert);
	if(len <= 0) return NULL;
	unsigned char digest[EVP_MAX_MD_SIZE];
	unsigned int dlen = 0;
	int ok = EVP_Digest(der, (size_t)len, digest, &dlen, EVP_sha256(), NULL);
	OPENSSL_free(der);
	if(!ok) return NULL;
	return hex_encode(digest, dlen);
}

/* ---------------------------------------------------------------------------------------- */
/* The service connection                                                                    */
/* ---------------------------------------------------------------------------------------- */

static void close_socket(void)
{
	if(sock >= 0) close(sock);
	sock = -1;
}

static bool open_socket(void)
{
	struct sockaddr_un addr;
	struct timeval tv;

	if(sock >= 0) return true;
	if(strlen(socket_path) >= sizeof(addr.sun_path)) return false;
	sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if(sock < 0) return false;
	tv.tv_sec = timeout_ms / 1000;
	tv.tv_usec = (timeout_ms % 1000) * 1000;
	setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(sock, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	memset(&addr, 0, sizeof(addr));
	addr.sun_family = AF_UNIX;
	strcpy(addr.sun_path, socket_path);
	if(connect(sock, (struct sockaddr *)&addr, sizeof(addr)) != 0){
		close_socket();
		return false;
	}
	return true;
}

/* Sends one line and reads one line back into answer (NUL-terminated); false on any error. */
static bool exchange(const struct buf *line, char *answer, size_t size)
{
	if(!open_socket()) return false;
	size_t sent = 0;
	while(sent < line->len){
		ssize_t n = send(sock, line->data + sent, line->len - sent, MSG_NOSIGNAL);
		if(n < 0 && errno == EINTR) continue;
		if(n <= 0) return false;
		sent += (size_t)n;
	}
	size_t got = 0;
	while(got + 1 < size){
		ssize_t n = recv(sock, answer + got, 1, 0);
		if(n < 0 && errno == EINTR) continue;
		if(n <= 0) return false;
		if(answer[got] == '\n'){
			answer[got] = '\0';
			return true;
		}
		got++;
	}
	return false; /* answer too long */
}

/* Asks the service about `op` by the connection (serial, cert_id, client_id); `answer` gets
 * the service's line. False when there was no answer. */
static bool ask_raw(const char *op, unsigned long long serial, const char *cert_id, const char *client_id,
		const char *topic, char *answer, size_t size, bool quiet)
{
	struct buf line = {0};
	char conn[32];
	bool answered = false;

	snprintf(conn, sizeof(conn), "%llu", serial);
	bool ok = buf_str(&line, "{\"op\":") && buf_json(&line, op)
		&& buf_str(&line, ",\"conn\":") && buf_json(&line, conn)
		&& buf_str(&line, ",\"cert\":") && buf_json(&line, cert_id)
		&& buf_str(&line, ",\"client\":") && buf_json(&line, client_id);
	if(ok && topic){
		ok = buf_str(&line, ",\"topic\":") && buf_json(&line, topic);
	}
	ok = ok && buf_str(&line, "}\n");
	if(ok){
		answered = exchange(&line, answer, size);
		if(!answered){
			/* One retry on a fresh connection (the service may have restarted). */
			close_socket();
			answered = exchange(&line, answer, size);
		}
		if(!answered){
			close_socket();
			if(!quiet){
				mosquitto_log_printf(MOSQ_LOG_ERR, "claimfab_auth: no answer from %s for %s: denied",
						socket_path, op);
			}
		}
	}
	free(line.data);
	return answered;
}

static enum answer ask(const char *op, unsigned long long serial, const char *cert_id, const char *client_id,
		const char *topic)
{
	char answer[64];
	if(!ask_raw(op, serial, cert_id, client_id, topic, answer, sizeof(answer), false)) return ANSWER_DENY;
	if(!strcmp(answer, "allow")) return ANSWER_ALLOW;
	if(!strcmp(answer, "disconnect")) return ANSWER_DISCONNECT;
	return ANSWER_DENY;
}

static bool is_service(const char *cert_id)
{
	return cert_id && !strcmp(cert_id, service_cert_id);
}

static bool is_provisioning_topic(const char *topic)
{
	return starts_with(topic, "$aws/certificates/") || starts_with(topic, "$aws/provisioning-templates/");
}

/* ---------------------------------------------------------------------------------------- */
/* The connection table                                                                       */
/* ---------------------------------------------------------------------------------------- */

static struct connection *connection_of(const struct mosquitto *client)
{
	for(size_t i = 0; i < connection_count; i++){
		if(connections[i].client == client) return &connections[i];
	}
	return NULL;
}

static struct connection *connection_numbered(unsigned long long serial)
{
	for(size_t i = 0; i < connection_count; i++){
		if(connections[i].serial == serial) return &connections[i];
	}
	return NULL;
}

static void connection_remove_at(size_t i)
{
	free(connections[i].client_id);
	free(connections[i].cert_id);
	connections[i] = connections[--connection_count];
}

/* Keeps an accepted connection. Any other entry holding its client id is dropped: mosquitto
 * is about to close that one (session takeover). */
static bool connection_add(struct mosquitto *client, unsigned long long serial, const char *client_id,
		const char *cert_id)
{
	for(size_t i = 0; i < connection_count;){
		if(!strcmp(connections[i].client_id, client_id) || connections[i].client == client){
			/* Its DISCONNECT will find no entry: tell the service now. */
			ask("disconnect", connections[i].serial, connections[i].cert_id, connections[i].client_id, NULL);
			connection_remove_at(i);
		}else{
			i++;
		}
	}
	if(connection_count == connection_cap){
		size_t cap = connection_cap ? connection_cap * 2 : 64;
		struct connection *grown = realloc(connections, cap * sizeof(*connections));
		if(!grown) return false;
		connections = grown;
		connection_cap = cap;
	}
	char *id = strdup(client_id), *cert = strdup(cert_id);
	if(!id || !cert){
		free(id);
		free(cert);
		return false;
	}
	connections[connection_count++] = (struct connection){client, serial, id, cert};
	return true;
}

/* ---------------------------------------------------------------------------------------- */
/* Replies, delivered from the tick                                                           */
/* ---------------------------------------------------------------------------------------- */

static void reply_free(struct reply *r)
{
	free(r->topic);
	free(r->payload);
	free(r);
}

/* Keeps a copy of the service's reply $claimfab/reply/SERIAL/REPLY_TOPIC for the next tick. */
static void reply_keep(const char *internal_topic, const void *payload, uint32_t payloadlen)
{
	const char *rest = internal_topic + strlen(REPLY_PREFIX);
	char *end = NULL;
	errno = 0;
	unsigned long long serial = strtoull(rest, &end, 10);
	if(errno || end == rest || *end != '/' || !is_provisioning_topic(end + 1)){
		mosquitto_log_printf(MOSQ_LOG_WARNING, "claimfab_auth: malformed reply topic %s dropped", internal_topic);
		return;
	}
	struct reply *r = calloc(1, sizeof(*r));
	if(!r) return;
	r->serial = serial;
	r->topic = strdup(end + 1);
	r->payload = malloc(payloadlen ? payloadlen : 1);
	if(!r->topic || !r->payload){
		reply_free(r);
		return;
	}
	if(payloadlen) memcpy(r->payload, payload, payloadlen);
	r->payloadlen = payloadlen;
	if(replies_tail){
		replies_tail->next = r;
	}else{
		replies_head = r;
	}
	replies_tail = r;
}

/* To the connection that asked, if it is still connected and may receive it. */
static void reply_deliver(const struct reply *r)
{
	struct connection *c = connection_numbered(r->serial);
	if(!c){
		mosquitto_log_printf(MOSQ_LOG_INFO, "claimfab_auth: reply on %s dropped: connection %llu is gone",
				r->topic, r->serial);
		return;
	}
	if(ask("receive", c->serial, c->cert_id, c->client_id, r->topic) != ANSWER_ALLOW) return;
	int rc = mosquitto_broker_publish_copy(c->client_id, r->topic, (int)r->payloadlen, r->payload, 1, false, NULL);
	if(rc != MOSQ_ERR_SUCCESS){
		mosquitto_log_printf(MOSQ_LOG_WARNING, "claimfab_auth: reply on %s to %s not queued (%d)",
				r->topic, c->client_id, rc);
	}
}

static void replies_deliver(void)
{
	struct reply *r = replies_head;
	replies_head = replies_tail = NULL;
	while(r){
		struct reply *next = r->next;
		reply_deliver(r);
		reply_free(r);
		r = next;
	}
}

/* Closes the connections the service says hold a certificate no longer ACTIVE. */
static void kicks_poll(void)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	long elapsed_ms = (now.tv_sec - last_kick_poll.tv_sec) * 1000 + (now.tv_nsec - last_kick_poll.tv_nsec) / 1000000;
	if(elapsed_ms < KICK_POLL_MS) return;
	last_kick_poll = now;
	for(int i = 0; i < 64; i++){
		char answer[64];
		/* Quiet: the broker ticks before the service is up. */
		if(!ask_raw("next_kick", 0, "", "", NULL, answer, sizeof(answer), true) || !strcmp(answer, "none")) return;
		char *end = NULL;
		unsigned long long serial = strtoull(answer, &end, 10);
		struct connection *c = (end && *end == '\0') ? connection_numbered(serial) : NULL;
		if(!c) continue;
		char *client_id = strdup(c->client_id);
		if(!client_id) return;
		mosquitto_log_printf(MOSQ_LOG_NOTICE, "claimfab_auth: closing %s: its certificate is no longer ACTIVE",
				client_id);
		/* Fires MOSQ_EVT_DISCONNECT at once, which removes c from the table. */
		mosquitto_kick_client_by_clientid(client_id, false);
		free(client_id);
	}
}

/* ---------------------------------------------------------------------------------------- */
/* Callbacks                                                                                  */
/* ---------------------------------------------------------------------------------------- */

static int on_basic_auth(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_basic_auth *ed = event_data;
	(void)event;
	(void)userdata;
	char *cert_id = client_cert_id(ed->client);
	const char *client_id = mosquitto_client_id(ed->client);
	int rc = MOSQ_ERR_UNKNOWN; /* not MOSQ_ERR_AUTH: close without a CONNACK, as AWS IoT does */
	if(!cert_id || !client_id){
		rc = MOSQ_ERR_UNKNOWN;
	}else if(is_service(cert_id)){
		rc = MOSQ_ERR_SUCCESS;
	}else if(strlen(client_id) <= MAX_CLIENT_ID){
		unsigned long long serial = next_serial++;
		if(ask("connect", serial, cert_id, client_id, NULL) == ANSWER_ALLOW){
			if(connection_add(ed->client, serial, client_id, cert_id)){
				rc = MOSQ_ERR_SUCCESS;
			}else{
				ask("disconnect", serial, cert_id, client_id, NULL);
			}
		}
	}
	mosquitto_free(cert_id);
	return rc;
}

static int acl_answer(enum answer a)
{
	return a == ANSWER_ALLOW ? MOSQ_ERR_SUCCESS : a == ANSWER_DISCONNECT ? MOSQ_ERR_AUTH : MOSQ_ERR_ACL_DENIED;
}

static int on_acl_check(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_acl_check *ed = event_data;
	(void)event;
	(void)userdata;
	char *cert_id = client_cert_id(ed->client);
	bool service = is_service(cert_id);
	mosquitto_free(cert_id);
	if(service) return MOSQ_ERR_SUCCESS;

	struct connection *c = connection_of(ed->client);
	if(!c) return ed->access == MOSQ_ACL_READ ? MOSQ_ERR_ACL_DENIED : MOSQ_ERR_AUTH;
	switch(ed->access){
		case MOSQ_ACL_UNSUBSCRIBE:
			return MOSQ_ERR_SUCCESS; /* AWS IoT has no permission for unsubscribing */
		case MOSQ_ACL_WRITE:
			/* Not a topic AWS has, or longer than AWS takes: treated as unauthorized. */
			if(starts_with(ed->topic, INTERNAL_PREFIX) || strlen(ed->topic) > MAX_TOPIC) return MOSQ_ERR_AUTH;
			/* A retained message needs iot:RetainPublish besides iot:Publish. */
			return acl_answer(ask(ed->retain ? "publish_retained" : "publish", c->serial, c->cert_id, c->client_id,
					ed->topic));
		case MOSQ_ACL_SUBSCRIBE:
			if(starts_with(ed->topic, INTERNAL_PREFIX) || strlen(ed->topic) > MAX_TOPIC) return MOSQ_ERR_AUTH;
			return acl_answer(ask("subscribe", c->serial, c->cert_id, c->client_id, ed->topic));
		case MOSQ_ACL_READ:
			/* Provisioning replies never travel by subscription (see the top of this file). */
			if(starts_with(ed->topic, INTERNAL_PREFIX) || is_provisioning_topic(ed->topic)) return MOSQ_ERR_ACL_DENIED;
			return ask("receive", c->serial, c->cert_id, c->client_id, ed->topic) == ANSWER_ALLOW
				? MOSQ_ERR_SUCCESS : MOSQ_ERR_ACL_DENIED;
		default:
			return MOSQ_ERR_ACL_DENIED;
	}
}

/* A device's provisioning request -> $claimfab/request/SERIAL/CERT_ID/HEX(CLIENT_ID)/TOPIC. */
static int route_request(struct mosquitto_evt_message *ed, const struct connection *c)
{
	char serial[32];
	snprintf(serial, sizeof(serial), "%llu", c->serial);
	char *hexid = hex_encode((const unsigned char *)c->client_id, strlen(c->client_id));
	struct buf t = {0};
	bool ok = hexid && buf_str(&t, REQUEST_PREFIX) && buf_str(&t, serial) && buf_str(&t, "/")
		&& buf_str(&t, c->cert_id) && buf_str(&t, "/") && buf_str(&t, hexid) && buf_str(&t, "/")
		&& buf_str(&t, ed->topic);
	char *topic = ok ? mosquitto_strdup(t.data) : NULL;
	free(t.data);
	mosquitto_free(hexid);
	if(!topic) return MOSQ_ERR_NOMEM;
	mosquitto_free(ed->topic);
	ed->topic = topic;
	ed->retain = false;
	return MOSQ_ERR_SUCCESS;
}

static int on_message(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_message *ed = event_data;
	(void)event;
	(void)userdata;
	char *cert_id = client_cert_id(ed->client);
	bool service = is_service(cert_id);
	mosquitto_free(cert_id);

	if(service){
		if(!starts_with(ed->topic, REPLY_PREFIX)) return MOSQ_ERR_SUCCESS;
		reply_keep(ed->topic, ed->payload, ed->payloadlen);
		return MOSQ_ERR_ACL_DENIED; /* dropped here; the copy goes out from the tick */
	}
	if(!is_provisioning_topic(ed->topic)) return MOSQ_ERR_SUCCESS;
	struct connection *c = connection_of(ed->client);
	return c ? route_request(ed, c) : MOSQ_ERR_ACL_DENIED;
}

static int on_tick(int event, void *event_data, void *userdata)
{
	(void)event;
	(void)event_data;
	(void)userdata;
	replies_deliver();
	kicks_poll();
	return MOSQ_ERR_SUCCESS;
}

static int on_disconnect(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_disconnect *ed = event_data;
	(void)event;
	(void)userdata;
	for(size_t i = 0; i < connection_count; i++){
		if(connections[i].client == ed->client){
			ask("disconnect", connections[i].serial, connections[i].cert_id, connections[i].client_id, NULL);
			connection_remove_at(i);
			break;
		}
	}
	return MOSQ_ERR_SUCCESS;
}

/* ---------------------------------------------------------------------------------------- */
/* Plugin entry points                                                                        */
/* ---------------------------------------------------------------------------------------- */

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	for(int i = 0; i < supported_version_count; i++){
		if(supported_versions[i] == 5) return 5;
	}
	return -1;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata,
		struct mosquitto_opt *options, int option_count)
{
	(void)userdata;
	plugin_id = identifier;
	for(int i = 0; i < option_count; i++){
		if(!strcmp(options[i].key, "socket")){
			socket_path = mosquitto_strdup(options[i].value);
		}else if(!strcmp(options[i].key, "service_cert_id")){
			service_cert_id = mosquitto_strdup(options[i].value);
		}else if(!strcmp(options[i].key, "timeout_ms")){
			timeout_ms = atoi(options[i].value);
			if(timeout_ms <= 0) timeout_ms = 5000;
		}
	}
	if(!socket_path || !service_cert_id){
		mosquitto_log_printf(MOSQ_LOG_ERR,
				"claimfab_auth: plugin_opt_socket and plugin_opt_service_cert_id are required");
		return MOSQ_ERR_INVAL;
	}
	clock_gettime(CLOCK_MONOTONIC, &last_kick_poll);
	/* Serials start at a random point: a restarted broker never gives a new connection the
	 * serial of one the service still remembers (its tokens, its queued kicks). */
	uint32_t start = 0;
	if(getentropy(&start, sizeof(start)) != 0){
		mosquitto_log_printf(MOSQ_LOG_ERR, "claimfab_auth: no entropy for the connection serials");
		return MOSQ_ERR_UNKNOWN;
	}
	next_serial = ((unsigned long long)start << 20) + 1;
	if(mosquitto_callback_register(plugin_id, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL, NULL)
			|| mosquitto_callback_register(plugin_id, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL, NULL)
			|| mosquitto_callback_register(plugin_id, MOSQ_EVT_MESSAGE, on_message, NULL, NULL)
			|| mosquitto_callback_register(plugin_id, MOSQ_EVT_TICK, on_tick, NULL, NULL)
			|| mosquitto_callback_register(plugin_id, MOSQ_EVT_DISCONNECT, on_disconnect, NULL, NULL)){
		return MOSQ_ERR_UNKNOWN;
	}
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options, int option_count)
{
	(void)userdata;
	(void)options;
	(void)option_count;
	mosquitto_callback_unregister(plugin_id, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL);
	mosquitto_callback_unregister(plugin_id, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL);
	mosquitto_callback_unregister(plugin_id, MOSQ_EVT_MESSAGE, on_message, NULL);
	mosquitto_callback_unregister(plugin_id, MOSQ_EVT_TICK, on_tick, NULL);
	mosquitto_callback_unregister(plugin_id, MOSQ_EVT_DISCONNECT, on_disconnect, NULL);
	close_socket();
	while(replies_head){
		struct reply *next = replies_head->next;
		reply_free(replies_head);
		replies_head = next;
	}
	while(connection_count) connection_remove_at(connection_count - 1);
	free(connections);
	mosquitto_free(socket_path);
	mosquitto_free(service_cert_id);
	return MOSQ_ERR_SUCCESS;
}
