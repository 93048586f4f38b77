/* StudyRooms compiled fan-out core: the declarations shared by fanout.c and the cffi cdef
 * (studyrooms/media/fanout_build.py reads this file; keep it plain C declarations only).
 * All structs are allocated and owned by Python (cffi); the C code never allocates. */

typedef struct sr_transport {
    int fd;                       /* UDP socket to send on; -1: cannot send (not connected, closed) */
    int addrlen;                  /* sockaddr_in / sockaddr_in6 length in addr; 0: connected socket */
    unsigned char addr[28];       /* destination (remote tuple) */
    void *srtp_ctx;               /* srtp_t of the outbound session; NULL: plaintext */
    void *srtp_protect;           /* libsrtp 2 srtp_protect(srtp_t, void *, int *) */
    int require_srtp;             /* 1 (WebRtcTransport): never send plaintext */
    unsigned long long tx_rtp, tx_bytes, tx_dropped, srtp_protected, srtp_failures;
    /* transport-wide congestion control (issue 10): when twcc_enabled, every RTP packet sent gets
     * the next transport-wide seq in its reserved slot (found exactly as media/twcc.py's
     * TwccStamper.stamp finds it) and a send record twcc[seq & twcc_mask]; Python-sent packets
     * (RTX answers, probe padding) take their seq from the same counter (sr_twcc_stamp) */
    int twcc_enabled;
    unsigned int twcc_seq;        /* next transport-wide seq (16 bits) */
    int twcc_cluster;             /* probe cluster of packets sent now (-1: none) */
    int sys_clock;                /* 1: sent_at = CLOCK_MONOTONIC (time.monotonic); 0: the packet's now */
    struct sr_twcc_record *twcc;  /* ring indexed by seq & twcc_mask (Python owns it) */
    unsigned int twcc_mask;
    unsigned long long twcc_stamped, twcc_unstamped;
} sr_transport;

typedef struct sr_twcc_record {
    double sent_at;               /* seconds (the transport's clock); < 0: never written */
    unsigned int size;            /* plaintext bytes (before SRTP), as TwccStamper records */
    int cluster;                  /* probe cluster id, -1 none */
} sr_twcc_record;

typedef struct sr_history {       /* one producer encoding's recent ingress packets (NACK source) */
    unsigned char *data;          /* slots * slot_bytes */
    unsigned short *lens;
    unsigned long long *gens;     /* ingress ext seq + 1 held by the slot; 0 = empty */
    unsigned int slots;           /* power of two */
    unsigned int slot_bytes;
} sr_history;

typedef struct sr_hist_entry {    /* one consumer's retransmission ring entry (no packet copy) */
    sr_history *hist;             /* NULL: empty */
    unsigned long long gen;
    unsigned int slot;
    unsigned int out_seq;
    unsigned int out_ts;
    int mid_off;
    int pid_off;                  /* VP8 picture id written at pid_off (-1 none), pid_bits 7/15 */
    int pid;
    int pid_bits;
    int tl0_off;                  /* VP8 TL0PICIDX written at tl0_off (-1 none) */
    int tl0;
} sr_hist_entry;

typedef struct sr_consumer {
    /* consumer (layer selection, pause) */
    int active;
    int current_layer;
    int target_layer;
    int switched;
    int vp8;                      /* 1: keep VP8 picture id / TL0PICIDX continuous (simulcast) */
    int pid_in, pid_out, max_pid, pid_sync, tl0_off, max_tl0, tl0_sync;
    /* VP8 temporal-layer dropping (Consumer._drop_temporal): -1 = all layers */
    int target_temporal, current_temporal;
    unsigned long long tl_dropped;
    /* send stream (SendStream's forwarding state) */
    unsigned int ssrc;
    int payload_type;
    int keyframe_gating;
    int sync_required;
    int started;
    long long source_ssrc;
    unsigned int seq_off, ts_off;
    unsigned int max_seq, max_ts;
    double max_sent_at;
    unsigned int initial_seq;
    long long initial_ts;         /* -1: take the first packet's timestamp */
    double clock_rate;
    int mid_elem_id;
    int mid_len_nibble;
    unsigned char mid_value[8];
    unsigned long long packets, bytes, octets, dropped_gated, syncs;
    double rate_next;
    sr_hist_entry *ring;          /* NULL: no retransmission history */
    unsigned int ring_n;
    sr_transport *transport;
} sr_consumer;

typedef struct sr_packet {        /* one normalised ingress packet, computed once by Python */
    int layer;
    unsigned int seq, ts;
    int keyframe;
    long long source_ssrc;
    int payload_len;
    int mid_value_offset;         /* > 0: an 8-byte MID slot value starts here */
    int payload_offset, payload_end;
    double now;
    unsigned long long ext_seq;
    sr_history *hist;             /* store the packet here first (NULL: no NACK history) */
    int twcc_value_offset;        /* unused (the slot is found per copy, as the Python stamper does) */
    int gated;                    /* out: consumers that dropped it waiting for a keyframe */
    int sent;                     /* out: copies handed to a transport */
} sr_packet;

/* Forward one ingress packet to n consumers. events[] gets (consumer index << 2 | flags) for
 * consumers Python must look at afterwards: 1 = switched layer, 2 = bitrate sample due.
 * Returns the number of events; -1 (nothing done) for a packet too big for the scratch buffer. */
int sr_fanout(const unsigned char *pkt, int len, sr_packet *m, sr_consumer **cs, int n, int *events);

/* The same with the ingress fields as arguments (one cffi call instead of a dozen struct stores);
 * counts[0] = consumers that dropped the packet waiting for a keyframe, counts[1] = copies sent. */
int sr_fanout_args(const unsigned char *pkt, int len, int layer, unsigned int seq, unsigned int ts, int keyframe,
                   long long source_ssrc, int payload_offset, int payload_end, int mid_value_offset, double now,
                   sr_history *hist, unsigned long long ext_seq, int twcc_value_offset,
                   sr_consumer **cs, int n, int *events, int *counts);

/* Initialise a transport's transport-wide seq ring (n records, a power of two) and turn stamping on. */
void sr_twcc_init(sr_transport *t, sr_twcc_record *ring, unsigned int n, unsigned int first_seq);

/* Stamp one packet Python sends (RTX, probe padding) from the transport's counter: the slot is filled
 * in place and the record written. Returns the seq, or -1 (counted unstamped) when it has no slot. */
int sr_twcc_stamp(sr_transport *t, unsigned char *buf, int len, double now);

/* The record of a recent seq: 1 and *out filled, or 0 when unknown/overwritten (TwccStamper.lookup). */
int sr_twcc_lookup(sr_transport *t, unsigned int seq, sr_twcc_record *out);
