/*
 * claimfab_auth: mosquitto 2.0 plugin (plugin API v5) for claimfab's local AWS IoT data plane.
 *
 * This file owns the broker side of "who is asking" (see service.py and authorizer.py beside
 * it for the other side, and ensure-dataplane.sh beside it for how it is built):
 *
 *   * Identity. Every TLS client is known by its certificate id, the SHA-256 (hex) of its
 *     certificate's DER encoding (AWS IoT's certificateId), from
 *     mosquitto_client_certificate(), and by its MQTT client id.
 *   * Authorization. Every decision is delegated to the fleet-provisioning service over a
 *     Unix socket: one JSON line out ({"op": "connect"|"publish"|"subscribe"|"receive"|
 *     "disconnect", "conn": ID, "cert": CERT_ID, "client": CLIENT_ID, "topic": T}), one line
 *     back ("allow", "deny" or "disconnect"). The call is blocking (mosquitto runs plugins
 *     on its single thread) and bounded by a send/receive timeout (plugin_opt_timeout_ms,
 *     default 5000); any error or timeout is a denial. "conn" is the address of the
 *     broker's client context: unique among live connections, so the service can cache per
 *     connection (a new CONNECT always re-evaluates).
 *       - connect (MOSQ_EVT_BASIC_AUTH, called for every CONNECT since the listener does not
 *         use use_identity_as_username): deny closes the socket without a CONNACK
 *         (we return an error other than MOSQ_ERR_AUTH, so mosquitto sends none), as AWS IoT
 *         does for an unauthorized connection.
 *       - publish (ACL check MOSQ_ACL_WRITE) and subscribe (MOSQ_ACL_SUBSCRIBE): AWS IoT
 *         closes the connection on an unauthorized publish or subscribe. mosquitto 2.0.11
 *         disconnects a client whenever the WRITE or SUBSCRIBE check returns an error other
 *         than MOSQ_ERR_ACL_DENIED (handle__publish / handle__subscribe return it and the
 *         read loop calls do_disconnect), so "disconnect" is answered with MOSQ_ERR_AUTH.
 *         (mosquitto_kick_client_by_clientid would free the context in the middle of its
 *         own packet handling; this route is the broker's own.)
 *       - receive (MOSQ_ACL_READ): mosquitto 2.0.11 calls it per subscriber, synchronously,
 *         from subs__send while the publish is being routed, with the subscriber's context,
 *         the topic and the payload (properties are NULL). A denial drops the message for
 *         that subscriber only, as AWS IoT does for iot:Receive.
 *   * Routing of the provisioning API. A device's PUBLISH on $aws/certificates/... or
 *     $aws/provisioning-templates/... passes the WRITE check (iot:Publish), then
 *     MOSQ_EVT_MESSAGE (which in 2.0.11 may replace the topic: plugin__handle_message
 *     stores event.topic back into the message before it is routed) rewrites it to
 *     $claimfab/request/CERT_ID/HEX(CLIENT_ID)/ORIGINAL_TOPIC, which only the service
 *     subscribes to. The service answers on $claimfab/reply/HEX(CLIENT_ID)/REPLY_TOPIC;
 *     MOSQ_EVT_MESSAGE rewrites that back to REPLY_TOPIC and remembers the addressee, and
 *     the READ checks that follow at once (same call stack, QoS 0 or 1) let REPLY_TOPIC
 *     through to that client only (after its iot:Receive check): another device subscribed
 *     to the same accepted/rejected topic never sees it. Nobody else can publish a message
 *     that reaches a $aws/certificates/ or $aws/provisioning-templates/ subscriber.
 *     (mosquitto_broker_publish() to one client id would skip the subscription and, in
 *     2.0.11's single_publish, the READ check too, although its header says otherwise.)
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
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

#define REQUEST_PREFIX "$claimfab/request/"
#define REPLY_PREFIX "$claimfab/reply/"
#define INTERNAL_PREFIX "$claimfab/"

enum answer { ANSWER_DENY = 0, ANSWER_ALLOW = 1, ANSWER_DISCONNECT = 2 };

static mosquitto_plugin_id_t *plugin_id;
static char *socket_path;
static char *service_cert_id;
static int timeout_ms = 5000;
static int sock = -1;

/* The reply being routed: its topic (as now stored in the message) and its addressee. */
static const char *pending_topic;
static char *pending_client;

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

static int hex_value(char c)
{
	if(c >= '0' && c <= '9') return c - '0';
	if(c >= 'a' && c <= 'f') return c - 'a' + 10;
	if(c >= 'A' && c <= 'F') return c - 'A' + 10;
	return -1;
}

/* Decodes n hex digits into a new NUL-terminated string; NULL if not hex or if it holds NUL. */
static char *hex_decode(const char *s, size_t n)
{
	if(n % 2) return NULL;
	char *out = malloc(n / 2 + 1);
	if(!out) return NULL;
	for(size_t i = 0; i < n; i += 2){
		int hi = hex_value(s[i]), lo = hex_value(s[i + 1]);
		if(hi < 0 || lo < 0 || (hi == 0 && lo == 0)){
			free(out);
			return NULL;
		}
		out[i / 2] = (char)(hi * 16 + lo);
	}
	out[n / 2] = '\0';
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

static enum answer ask(const char *op, struct mosquitto *client, const char *cert_id, const char *topic)
{
	struct buf line = {0};
	char conn[32];
	char answer[64];
	enum answer result = ANSWER_DENY;

	snprintf(conn, sizeof(conn), "%p", (void *)client);
	bool ok = buf_str(&line, "{\"op\":") && buf_json(&line, op)
		&& buf_str(&line, ",\"conn\":") && buf_json(&line, conn)
		&& buf_str(&line, ",\"cert\":") && buf_json(&line, cert_id)
		&& buf_str(&line, ",\"client\":") && buf_json(&line, mosquitto_client_id(client));
	if(ok && topic){
		ok = buf_str(&line, ",\"topic\":") && buf_json(&line, topic);
	}
	ok = ok && buf_str(&line, "}\n");
	if(ok){
		bool answered = exchange(&line, answer, sizeof(answer));
		if(!answered){
			/* One retry on a fresh connection (the service may have restarted). */
			close_socket();
			answered = exchange(&line, answer, sizeof(answer));
		}
		if(!answered){
			close_socket();
			mosquitto_log_printf(MOSQ_LOG_ERR, "claimfab_auth: no answer from %s for %s: denied",
					socket_path, op);
		}else if(!strcmp(answer, "allow")){
			result = ANSWER_ALLOW;
		}else if(!strcmp(answer, "disconnect")){
			result = ANSWER_DISCONNECT;
		}
	}
	free(line.data);
	return result;
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
/* Callbacks                                                                                  */
/* ---------------------------------------------------------------------------------------- */

static int on_basic_auth(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_basic_auth *ed = event_data;
	(void)event;
	(void)userdata;
	char *cert_id = client_cert_id(ed->client);
	int rc;
	if(!cert_id){
		rc = MOSQ_ERR_UNKNOWN;
	}else if(is_service(cert_id)){
		rc = MOSQ_ERR_SUCCESS;
	}else{
		/* MOSQ_ERR_UNKNOWN, not MOSQ_ERR_AUTH: close without a CONNACK, as AWS IoT does. */
		rc = ask("connect", ed->client, cert_id, NULL) == ANSWER_ALLOW ? MOSQ_ERR_SUCCESS : MOSQ_ERR_UNKNOWN;
	}
	mosquitto_free(cert_id);
	return rc;
}

static int on_acl_check(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_acl_check *ed = event_data;
	(void)event;
	(void)userdata;
	char *cert_id = client_cert_id(ed->client);
	int rc = MOSQ_ERR_ACL_DENIED;
	enum answer a;

	if(!cert_id) return MOSQ_ERR_ACL_DENIED;
	if(is_service(cert_id)){
		mosquitto_free(cert_id);
		return MOSQ_ERR_SUCCESS;
	}
	switch(ed->access){
		case MOSQ_ACL_UNSUBSCRIBE:
			rc = MOSQ_ERR_SUCCESS; /* AWS IoT has no permission for unsubscribing */
			break;
		case MOSQ_ACL_WRITE:
			if(starts_with(ed->topic, INTERNAL_PREFIX)){
				rc = MOSQ_ERR_AUTH; /* not a topic AWS has: treat as unauthorized */
				break;
			}
			a = ask("publish", ed->client, cert_id, ed->topic);
			rc = a == ANSWER_ALLOW ? MOSQ_ERR_SUCCESS : a == ANSWER_DISCONNECT ? MOSQ_ERR_AUTH : MOSQ_ERR_ACL_DENIED;
			break;
		case MOSQ_ACL_SUBSCRIBE:
			if(starts_with(ed->topic, INTERNAL_PREFIX)){
				rc = MOSQ_ERR_AUTH;
				break;
			}
			a = ask("subscribe", ed->client, cert_id, ed->topic);
			rc = a == ANSWER_ALLOW ? MOSQ_ERR_SUCCESS : a == ANSWER_DISCONNECT ? MOSQ_ERR_AUTH : MOSQ_ERR_ACL_DENIED;
			break;
		case MOSQ_ACL_READ:
			if(starts_with(ed->topic, INTERNAL_PREFIX)){
				rc = MOSQ_ERR_ACL_DENIED;
				break;
			}
			if(is_provisioning_topic(ed->topic)){
				/* Only the reply being routed, and only to its addressee. */
				const char *id = mosquitto_client_id(ed->client);
				if(!pending_topic || !pending_client || strcmp(ed->topic, pending_topic)
						|| !id || strcmp(id, pending_client)){
					rc = MOSQ_ERR_ACL_DENIED;
					break;
				}
			}
			rc = ask("receive", ed->client, cert_id, ed->topic) == ANSWER_ALLOW ? MOSQ_ERR_SUCCESS : MOSQ_ERR_ACL_DENIED;
			break;
		default:
			rc = MOSQ_ERR_ACL_DENIED;
	}
	mosquitto_free(cert_id);
	return rc;
}

static int on_message(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_message *ed = event_data;
	(void)event;
	(void)userdata;
	char *cert_id = client_cert_id(ed->client);
	int rc = MOSQ_ERR_SUCCESS;

	free(pending_client);
	pending_client = NULL;
	pending_topic = NULL;

	if(!cert_id) return MOSQ_ERR_ACL_DENIED;
	if(is_service(cert_id)){
		if(starts_with(ed->topic, REPLY_PREFIX)){
			/* $claimfab/reply/HEX(CLIENT_ID)/REPLY_TOPIC -> REPLY_TOPIC, for that client. */
			const char *hex = ed->topic + strlen(REPLY_PREFIX);
			const char *slash = strchr(hex, '/');
			char *client = slash ? hex_decode(hex, (size_t)(slash - hex)) : NULL;
			char *topic = (client && is_provisioning_topic(slash + 1)) ? mosquitto_strdup(slash + 1) : NULL;
			if(!topic){
				free(client);
				rc = MOSQ_ERR_ACL_DENIED;
			}else{
				mosquitto_free(ed->topic);
				ed->topic = topic;
				ed->retain = false;
				pending_topic = topic;
				pending_client = client;
			}
		}
	}else if(is_provisioning_topic(ed->topic)){
		/* A device's request: to the service, with who is asking. */
		const char *id = mosquitto_client_id(ed->client);
		char *hexid = id ? hex_encode((const unsigned char *)id, strlen(id)) : NULL;
		struct buf t = {0};
		bool ok = hexid && buf_str(&t, REQUEST_PREFIX) && buf_str(&t, cert_id) && buf_str(&t, "/")
			&& buf_str(&t, hexid) && buf_str(&t, "/") && buf_str(&t, ed->topic);
		char *topic = ok ? mosquitto_strdup(t.data) : NULL;
		free(t.data);
		mosquitto_free(hexid);
		if(!topic){
			rc = MOSQ_ERR_NOMEM;
		}else{
			mosquitto_free(ed->topic);
			ed->topic = topic;
			ed->retain = false;
		}
	}
	mosquitto_free(cert_id);
	return rc;
}

static int on_disconnect(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_disconnect *ed = event_data;
	(void)event;
	(void)userdata;
	char *cert_id = client_cert_id(ed->client);
	if(cert_id && !is_service(cert_id) && mosquitto_client_id(ed->client)){
		ask("disconnect", ed->client, cert_id, NULL);
	}
	mosquitto_free(cert_id);
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
	if(mosquitto_callback_register(plugin_id, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL, NULL)
			|| mosquitto_callback_register(plugin_id, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL, NULL)
			|| mosquitto_callback_register(plugin_id, MOSQ_EVT_MESSAGE, on_message, NULL, NULL)
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
	mosquitto_callback_unregister(plugin_id, MOSQ_EVT_DISCONNECT, on_disconnect, NULL);
	close_socket();
	free(pending_client);
	pending_client = NULL;
	mosquitto_free(socket_path);
	mosquitto_free(service_cert_id);
	return MOSQ_ERR_SUCCESS;
}
