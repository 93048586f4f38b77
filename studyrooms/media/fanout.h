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

/* ---- the compiled receive step (ingress.c): recvmmsg, SRTP unprotect, RecvStream's in-order
 * path and ingress normalisation, then sr_fanout. Python (fastpath.RxSocket and friends) owns all
 * the memory; anything the core does not handle goes back to Python untouched. */

typedef struct sr_rstream {      /* one producer encoding (RecvStream's hot fields) */
    unsigned int ssrc;
    int key;                      /* encoding index */
    int gate;                     /* nonzero: Python receives this stream (NACKs due, paused, ...) */
    int vp8;                      /* 1: VP8 keyframe detection; 0: no detector (audio) */
    double clock_rate;
    signed char pt_table[128];    /* client PT -> router PT, -1 unknown */
    unsigned char ext_table[256]; /* client ext id -> router id (0 drop) */
    unsigned char twcc_ids[256];  /* 1: the sender's transport-wide seq (dropped) */
    unsigned char slots[16];      /* reserved MID / transport-wide slots, as RecvStream._slots */
    int slots_len;
    int mid_slot;                 /* 1: slots start with the MID slot */
    int al_id;                    /* router audio-level id, -1 none */
    /* sequence tracking (RFC 3550 A.1) and stats */
    int started;
    unsigned int max_seq;
    long long cycles, ext_max, received;
    unsigned char *table;         /* 4096-entry received bitmap */
    long long jitter_q4, last_transit;
    unsigned long long packets, bytes;
    double rate_next;
    /* the last packet */
    int last_seq;
    long long last_ts;
    int last_marker, last_audio_level, last_payload_offset, last_payload_end, mid_value_offset, last_keyframe;
    long long last_ext_seq;
    double last_receive_time;
    /* producer: active-speaker level sums, the fan-out of its compiled consumers */
    long long level_sum, level_count;
    sr_consumer **cs;
    int n;
    int *events;
    sr_history *hist;
    int store;
    int nev, gated, sent, out_len;  /* of the last fan-out, when it needs Python (SR_RX_EVENTS) */
    int pyid;
    unsigned long long handled;     /* packets the core took end to end */
    /* per-TID byte totals (Producer._temporal: media/rate.py TemporalRates), tl_n layers; 0: none */
    int tl_n;
    long long *tl_totals;
    double *tl_next;
} sr_rstream;

typedef struct sr_rxt {          /* one transport's receive side */
    void *srtp_ctx;               /* inbound srtp_t; NULL: plaintext (unless require_srtp) */
    void *srtp_unprotect;         /* libsrtp srtp_unprotect */
    int require_srtp;
    int gate;                     /* nonzero: Python receives everything */
    /* the sender's transport-wide seqs (TwccRecorder.on_rtp's input), recorded in arrival order
     * for the packets the core takes; Python drains them into its recorder before anything else */
    int twcc_id;                  /* the sender's transport-cc extension id, 0: none */
    int twcc_n, twcc_cap;
    unsigned int *twcc_seqs;
    unsigned int *twcc_ssrcs;
    double *twcc_times;
    unsigned long long rx_rtp, rx_bytes, srtp_unprotected, srtp_auth_failures, srtp_replay_failures,
                       srtp_other_failures;
    int nstreams;
    unsigned int ssrcs[32];
    sr_rstream *streams[32];
} sr_rxt;

typedef struct sr_route {
    int addrlen;
    unsigned char addr[28];
    sr_rxt *t;
    int pyid;
} sr_route;

typedef struct sr_rx {           /* one UDP socket */
    int fd;
    int left;                     /* datagrams this wake-up may still read (Python sets it) */
    int batch;                    /* datagrams per recvmmsg (1..32): slots Python allocated */
    int count, cursor;            /* the current recvmmsg batch */
    unsigned char *bufs;          /* SR_RX_BATCH slots of 2048 bytes */
    int *lens;
    unsigned char *addrs;         /* SR_RX_BATCH x 28 */
    int *addrlens;
    unsigned char *out;           /* normalisation scratch (2048 + 64) */
    sr_route *routes;
    int nroutes, maxroutes;
    unsigned long long received, received_bytes, batches, read_errors;
    /* out: the datagram / plaintext / stream Python must handle */
    const unsigned char *cur;
    int cur_len;
    int cur_slot;
    int cur_route;
    sr_rstream *cur_stream;
} sr_rx;

/* Handle datagrams until one needs Python or this wake-up's budget is spent. Returns 0 (done:
 * nothing left, or rx.left reached 0), 1 (raw datagram cur/cur_len from addrs[cur_slot]: Python's
 * datagram path), 2 (plaintext RTP cur/cur_len of route cur_route: Python's receive_rtp),
 * 3 (cur_stream's packet was forwarded; its fan-out needs Python: events, gated, history). */
int sr_rx_step(sr_rx *rx);

/* The same normalisation and in-order step on one plaintext packet (tests, benchmarks). Returns
 * 0 handled, 2 Python must take it, 3 handled with events. */
int sr_rx_packet(sr_rx *rx, sr_rxt *t, unsigned char *pkt, int len, double now);
