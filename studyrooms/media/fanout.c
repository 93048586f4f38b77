/* StudyRooms compiled fan-out core (issue 13). The Python twin is SendStream.send +
 * Consumer.forward + Vp8PictureRewriter.rewrite + Transport.send_rtp; tests/media/test_fastpath_diff.py
 * checks both produce the same bytes on the wire. No allocation here: every buffer is either the
 * static scratch buffer below or memory Python allocated (cffi) and keeps alive. Called with the
 * GIL held (cffi API mode without release), so Python-visible state is never seen half-updated. */
#include <errno.h>
#include <math.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "fanout.h"

#define SR_BUF 2048
#define SR_MAX_RTP 1500
#define SR_TRAILER 148

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

static void sr_send(sr_transport *t, unsigned char *buf, int len, sr_packet *m) {
    if (t == NULL || t->fd < 0) {
        if (t) t->tx_dropped++;
        return;
    }
    if (m->twcc_value_offset > 0 && t->twcc_enabled) {
        unsigned int s = t->twcc_seq & 0xFFFF;
        buf[m->twcc_value_offset] = (unsigned char)(s >> 8);
        buf[m->twcc_value_offset + 1] = (unsigned char)(s & 0xFF);
        t->twcc_seq = (s + 1) & 0xFFFF;
        if (t->records) {
            sr_send_record *r = &t->records[t->records_head & t->records_mask];
            r->seq = s;
            r->size = (unsigned int)len;
            r->sent_at = m->now;
            t->records_head++;
        }
    }
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
    } else if (t->require_srtp) {
        t->tx_dropped++;
        return;
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
