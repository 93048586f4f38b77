/* StudyRooms compiled fan-out core (issue 13). The Python twin is SendStream.send +
 * Consumer.forward (temporal-layer dropping included) + Vp8PictureRewriter.rewrite +
 * WebRtcTransport.send_rtp (TwccStamper.stamp included); tests/sfu/test_fastpath_*diff*.py
 * checks both produce the same bytes on the wire. No allocation here: every buffer is either the
 * static scratch buffer below or memory Python allocated (cffi) and keeps alive. Called with the
 * GIL held (cffi API mode without release), so Python-visible state is never seen half-updated. */
#include <errno.h>
#include <math.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>

#include "fanout.h"

#define SR_BUF 2048
#define SR_MAX_RTP 1500
#define SR_TRAILER 148
#define SR_TWCC_SLOT_HEADER ((5 << 4) | 1) /* media/twcc.py TWCC_SLOT_HEADER */

typedef int (*sr_protect_fn)(void *ctx, void *hdr, int *len);

static unsigned char sr_out[SR_BUF];

static void sr_vp8_rewrite(sr_consumer *c, unsigned char *buf, int off, int end, int source_changed,
                           sr_hist_entry *e) {
    if (source_changed) {
        c->pid_sync = 1;
        c->tl0_sync = 1;
    }
    if (off < 0 || off + 1 >= end || !(buf[off] & 0x80)) return;
    int x = buf[off + 1];
    int pos = off + 2;
    if (x & 0x80) {
        if (pos >= end) return;
        int m = buf[pos] & 0x80;
        if (m && pos + 1 >= end) return;
        int picture_id = m ? (((buf[pos] & 0x7F) << 8) | buf[pos + 1]) : buf[pos];
        int out;
        if (c->pid_sync || c->pid_in < 0) {
            out = c->max_pid >= 0 ? ((c->max_pid + 1) & 0x7FFF) : picture_id;
            c->pid_in = picture_id;
            c->pid_out = out;
            c->pid_sync = 0;
        } else {
            int d = m ? (((picture_id - c->pid_in + 0x4000) & 0x7FFF) - 0x4000)
                      : (((picture_id - c->pid_in + 0x40) & 0x7F) - 0x40);
            out = (c->pid_out + d) & 0x7FFF;
            if (d > 0) {
                c->pid_in = picture_id;
                c->pid_out = out;
            }
        }
        if (c->max_pid < 0 || (((out - c->max_pid) & 0x7FFF) > 0 && ((out - c->max_pid) & 0x7FFF) < 0x4000))
            c->max_pid = out;
        if (m) {
            buf[pos] = (unsigned char)(0x80 | (out >> 8));
            buf[pos + 1] = (unsigned char)(out & 0xFF);
            e->pid_off = pos; e->pid = out; e->pid_bits = 15;
            pos += 2;
        } else {
            buf[pos] = (unsigned char)(out & 0x7F);
            e->pid_off = pos; e->pid = out & 0x7F; e->pid_bits = 7;
            pos += 1;
        }
    }
    if ((x & 0x40) && pos < end) {
        int tl0 = buf[pos];
        if (c->tl0_sync) {
            c->tl0_off = c->max_tl0 >= 0 ? (((c->max_tl0 + 1) - tl0) & 0xFF) : 0;
            c->tl0_sync = 0;
        }
        int out = (tl0 + c->tl0_off) & 0xFF;
        if (c->max_tl0 < 0 || (((out - c->max_tl0) & 0xFF) > 0 && ((out - c->max_tl0) & 0xFF) < 0x80))
            c->max_tl0 = out;
        buf[pos] = (unsigned char)out;
        e->tl0_off = pos; e->tl0 = out;
    }
}

static void sr_rebase(sr_consumer *c, unsigned int seq, unsigned int ts, double now) {
    unsigned int out_seq, out_ts;
    c->syncs++;
    if (c->started) {
        out_seq = (c->max_seq + 1) & 0xFFFF;
        /* Python's int(round(x)): ties to even, which nearbyint() does in the default mode */
        double step = nearbyint((now - c->max_sent_at) * c->clock_rate);
        if (step < 1) step = 1;
        out_ts = (unsigned int)((c->max_ts + (unsigned long long)step) & 0xFFFFFFFFu);
    } else {
        out_seq = c->initial_seq;
        out_ts = c->initial_ts < 0 ? ts : (unsigned int)(c->initial_ts & 0xFFFFFFFF);
    }
    c->seq_off = (out_seq - seq) & 0xFFFF;
    c->ts_off = (out_ts - ts) & 0xFFFFFFFFu;
}

/* media/twcc.py TwccStamper.stamp's slot search, byte for byte: the 2-byte value offset or -1. */
static int sr_twcc_slot(const unsigned char *d, int n) {
    int b0 = d[0];
    if (!(b0 & 0x10)) return -1;
    int h = 12 + ((b0 & 0x0F) << 2);
    if (h + 8 > n || d[h] != 0xBE || d[h + 1] != 0xDE) return -1;
    if (h + 16 <= n && d[h + 13] == SR_TWCC_SLOT_HEADER) return h + 14;
    if (d[h + 4] == SR_TWCC_SLOT_HEADER) return h + 5;
    return -1;
}

static int sr_twcc_take(sr_transport *t, unsigned char *buf, int len, double now) {
    if (len < 12) { t->twcc_unstamped++; return -1; }
    int off = sr_twcc_slot(buf, len);
    if (off < 0) { t->twcc_unstamped++; return -1; }
    unsigned int s = t->twcc_seq & 0xFFFF;
    t->twcc_seq = (s + 1) & 0xFFFF;
    buf[off] = (unsigned char)(s >> 8);
    buf[off + 1] = (unsigned char)(s & 0xFF);
    if (t->twcc) {
        sr_twcc_record *r = &t->twcc[s & t->twcc_mask];
        if (t->sys_clock) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            now = (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
        }
        r->sent_at = now;
        r->size = (unsigned int)len;
        r->cluster = t->twcc_cluster;
    }
    t->twcc_stamped++;
    return (int)s;
}

void sr_twcc_init(sr_transport *t, sr_twcc_record *ring, unsigned int n, unsigned int first_seq) {
    for (unsigned int i = 0; i < n; i++) {
        ring[i].sent_at = -1.0;
        ring[i].size = 0;
        ring[i].cluster = -1;
    }
    t->twcc = ring;
    t->twcc_mask = n - 1;
    t->twcc_seq = first_seq & 0xFFFF;
    t->twcc_cluster = -1;
    t->twcc_enabled = 1;
}

int sr_twcc_stamp(sr_transport *t, unsigned char *buf, int len, double now) {
    return sr_twcc_take(t, buf, len, now);
}

int sr_twcc_lookup(sr_transport *t, unsigned int seq, sr_twcc_record *out) {
    if (!t->twcc) return 0;
    seq &= 0xFFFF;
    sr_twcc_record *r = &t->twcc[seq & t->twcc_mask];
    if (r->sent_at < 0) return 0;
    unsigned int age = (t->twcc_seq - seq) & 0xFFFF;
    if (age > t->twcc_mask + 1 || seq == (t->twcc_seq & 0xFFFF)) return 0;
    *out = *r;
    return 1;
}

static void sr_send(sr_transport *t, unsigned char *buf, int len, sr_packet *m) {
    if (t == NULL || t->fd < 0) {
        if (t) t->tx_dropped++;
        return;
    }
    if (t->require_srtp && !t->srtp_ctx) {  /* WebRtcTransport.send_rtp: not connected, nothing stamped */
        t->tx_dropped++;
        return;
    }
    if (t->twcc_enabled) sr_twcc_take(t, buf, len, m->now);
    if (t->srtp_ctx) {
        if (len > SR_MAX_RTP) { t->tx_dropped++; t->srtp_failures++; return; }
        int n = len;
        if (((sr_protect_fn)t->srtp_protect)(t->srtp_ctx, buf, &n) != 0) {
            t->tx_dropped++;
            t->srtp_failures++;
            return;
        }
        t->srtp_protected++;
        len = n;
    }
    ssize_t r = t->addrlen ? sendto(t->fd, buf, (size_t)len, MSG_DONTWAIT, (const struct sockaddr *)t->addr,
                                    (socklen_t)t->addrlen)
                           : send(t->fd, buf, (size_t)len, MSG_DONTWAIT);
    if (r < 0) {
        t->tx_dropped++;
        return;
    }
    t->tx_rtp++;
    t->tx_bytes += (unsigned long long)len;
}

/* media/vp8.py parse_vp8_descriptor, the fields temporal dropping needs. Returns 0 when truncated. */
int sr_vp8_desc(const unsigned char *d, int off, int end, int *picture_id, int *bits, int *tid) {
    *picture_id = -1; *bits = 0; *tid = -1;
    if (off < 0 || off >= end) return 0;
    int b0 = d[off];
    int pos = off + 1;
    if (b0 & 0x80) {
        if (pos >= end) return 0;
        int x = d[pos++];
        if (x & 0x80) {
            if (pos >= end) return 0;
            int p0 = d[pos];
            if (p0 & 0x80) {
                if (pos + 1 >= end) return 0;
                *picture_id = ((p0 & 0x7F) << 8) | d[pos + 1];
                *bits = 15;
                pos += 2;
            } else {
                *picture_id = p0;
                *bits = 7;
                pos += 1;
            }
        }
        if (x & 0x40) {
            if (pos >= end) return 0;
            pos++;
        }
        if (x & 0x30) {
            if (pos >= end) return 0;
            if (x & 0x20) *tid = d[pos] >> 6;
            pos++;
        }
    }
    return 1;
}

/* Consumer._drop_temporal: 1 to drop this packet (its TID is above the kept temporal layer). */
static int sr_drop_temporal(sr_consumer *c, const unsigned char *pkt, int len, sr_packet *m) {
    int end = m->payload_end <= len ? m->payload_end : len;
    int picture_id, bits, tid;
    if (!sr_vp8_desc(pkt, m->payload_offset, end, &picture_id, &bits, &tid) || tid < 0) return 0;
    int b0 = pkt[m->payload_offset];
    if ((b0 & 0x10) && !(b0 & 0x07)) {  /* a frame starts: the kept layer may change */
        int want = c->target_temporal, cur = c->current_temporal;
        if (want != cur && ((want >= 0 && (cur < 0 || want < cur)) || tid == 0)) c->current_temporal = want;
    }
    int keep = c->current_temporal;
    if (keep < 0 || tid <= keep) return 0;
    c->tl_dropped++;
    /* SendStream.skip_packet: the packets after it move down by one (no gap for the receiver) */
    if (!c->sync_required && c->started) c->seq_off = (c->seq_off - 1) & 0xFFFF;
    /* Vp8PictureRewriter.skip_picture */
    if (c->vp8 && picture_id >= 0 && !c->pid_sync && c->pid_in >= 0) {
        int d = bits == 15 ? (((picture_id - c->pid_in + 0x4000) & 0x7FFF) - 0x4000)
                           : (((picture_id - c->pid_in + 0x40) & 0x7F) - 0x40);
        if (d > 0) c->pid_in = picture_id;
    }
    return 1;
}

int sr_fanout(const unsigned char *pkt, int len, sr_packet *m, sr_consumer **cs, int n, int *events) {
    int nev = 0;
    m->gated = 0;
    m->sent = 0;
    if (len < 12) return 0;
    if (len > SR_BUF - SR_TRAILER) return -1;  /* bigger than the scratch buffer: Python forwards it */
    sr_history *h = m->hist;
    unsigned int slot = 0;
    unsigned long long gen = 0;
    if (h) {
        slot = (unsigned int)(m->ext_seq & (h->slots - 1));
        gen = m->ext_seq + 1;
        if ((unsigned int)len <= h->slot_bytes) {
            memcpy(h->data + (size_t)slot * h->slot_bytes, pkt, (size_t)len);
            h->lens[slot] = (unsigned short)len;
            h->gens[slot] = gen;
        } else {
            h->gens[slot] = 0;
            h = NULL;
        }
    }
    for (int i = 0; i < n; i++) {
        sr_consumer *c = cs[i];
        if (!c->active) continue;
        int flags = 0;
        if (m->layer != c->current_layer) {
            if (m->layer != c->target_layer) continue;
            if (!m->keyframe) { m->gated++; continue; }  /* waiting for its layer's keyframe: ask again (throttled) */
            if (c->current_layer != m->layer) flags |= 1;
            c->current_layer = m->layer;
            c->switched = 1;
            c->sync_required = 1;
        }
        if ((c->target_temporal != c->current_temporal || c->current_temporal >= 0)
            && sr_drop_temporal(c, pkt, len, m)) {
            if (flags) events[nev++] = (i << 2) | flags;
            continue;
        }
        unsigned char *b = sr_out;
        memcpy(b, pkt, (size_t)len);
        sr_hist_entry e;
        e.pid_off = -1; e.tl0_off = -1; e.pid = 0; e.pid_bits = 0; e.tl0 = 0;
        if (c->vp8) {
            sr_vp8_rewrite(c, b, m->payload_offset, m->payload_end < len ? m->payload_end : len, c->switched, &e);
            c->switched = 0;
        }
        /* SendStream.send */
        if (c->sync_required || m->source_ssrc != c->source_ssrc) {
            if (c->keyframe_gating && !m->keyframe) {
                c->dropped_gated++;
                m->gated++;
                if (flags) events[nev++] = (i << 2) | flags;
                continue;
            }
            sr_rebase(c, m->seq, m->ts, m->now);
            c->source_ssrc = m->source_ssrc;
            c->sync_required = 0;
        }
        unsigned int out_seq = (m->seq + c->seq_off) & 0xFFFF;
        unsigned int out_ts = (m->ts + c->ts_off) & 0xFFFFFFFFu;
        b[1] = (unsigned char)((b[1] & 0x80) | (c->payload_type & 0x7F));
        b[2] = (unsigned char)(out_seq >> 8); b[3] = (unsigned char)out_seq;
        b[4] = (unsigned char)(out_ts >> 24); b[5] = (unsigned char)(out_ts >> 16);
        b[6] = (unsigned char)(out_ts >> 8); b[7] = (unsigned char)out_ts;
        b[8] = (unsigned char)(c->ssrc >> 24); b[9] = (unsigned char)(c->ssrc >> 16);
        b[10] = (unsigned char)(c->ssrc >> 8); b[11] = (unsigned char)c->ssrc;
        int mo = m->mid_value_offset;
        if (mo > 0 && mo + 8 <= len) {
            c->mid_elem_id = b[mo - 1] >> 4;
            b[mo - 1] = (unsigned char)((c->mid_elem_id << 4) | c->mid_len_nibble);
            memcpy(b + mo, c->mid_value, 8);
        }
        if (c->ring && c->ring_n > 1) {
            sr_hist_entry *r = &c->ring[out_seq % c->ring_n];
            r->hist = h;
            r->gen = gen;
            r->slot = slot;
            r->out_seq = out_seq;
            r->out_ts = out_ts;
            r->mid_off = mo;
            r->pid_off = e.pid_off; r->pid = e.pid; r->pid_bits = e.pid_bits;
            r->tl0_off = e.tl0_off; r->tl0 = e.tl0;
        }
        c->packets++;
        if (m->now >= c->rate_next) {
            flags |= 2;
            c->rate_next = INFINITY;  /* Python samples (byte total before this packet) and resets it */
        }
        c->bytes += (unsigned long long)len;
        c->octets += (unsigned long long)(m->payload_len > 0 ? m->payload_len : 0);
        unsigned int d = (out_seq - c->max_seq) & 0xFFFF;
        if ((d > 0 && d < 0x8000) || !c->started) {
            c->started = 1;
            c->max_seq = out_seq;
            c->max_ts = out_ts;
            c->max_sent_at = m->now;
        }
        if (flags) events[nev++] = (i << 2) | flags;
        m->sent++;
        sr_send(c->transport, b, len, m);
    }
    return nev;
}

int sr_fanout_args(const unsigned char *pkt, int len, int layer, unsigned int seq, unsigned int ts, int keyframe,
                   long long source_ssrc, int payload_offset, int payload_end, int mid_value_offset, double now,
                   sr_history *hist, unsigned long long ext_seq, int twcc_value_offset,
                   sr_consumer **cs, int n, int *events, int *counts) {
    sr_packet m;
    m.layer = layer;
    m.seq = seq;
    m.ts = ts;
    m.keyframe = keyframe;
    m.source_ssrc = source_ssrc;
    m.payload_len = payload_end - payload_offset;
    m.mid_value_offset = mid_value_offset;
    m.payload_offset = payload_offset;
    m.payload_end = payload_end;
    m.now = now;
    m.ext_seq = ext_seq;
    m.hist = hist;
    m.twcc_value_offset = twcc_value_offset;
    int nev = sr_fanout(pkt, len, &m, cs, n, events);
    counts[0] = m.gated;
    counts[1] = m.sent;
    return nev;
}
