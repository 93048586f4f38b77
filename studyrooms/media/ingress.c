/* StudyRooms compiled receive step (issue 13). The Python twins: UdpSocket.datagram_received ->
 * PlainTransport/WebRtcTransport._on_datagram (SRTP unprotect) -> Transport.receive_rtp ->
 * RtpListener.lookup -> Producer.receive_rtp -> RecvStream._receive (its in-order path and the
 * normalisation _make_plan describes) -> Fanout.run. Only the common case is done here: an RTP
 * packet from a known tuple, of a known SSRC, in order, not a keyframe, no NACK pending, no rate
 * sample due; everything else goes back to Python before any state changes, so the Python path
 * sees exactly the state it would have built itself (tests/sfu/test_fastpath_ingress_diff.py).
 * No allocation: the buffers are Python's (cffi). Runs with the GIL held. */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>

#include "fanout.h"

#define SR_RX_BATCH 32
#define SR_RX_SLOT 2048
#define SR_RX_ADDR 28
#define SR_RX_MAX_OUT 1900 /* sr_fanout's limit (SR_BUF - SR_TRAILER) */
#define SR_SEQ_MOD 65536
#define SR_TABLE_MASK 4095

typedef int (*sr_unprotect_fn)(void *ctx, void *hdr, int *len);

/* fanout.c: media/vp8.py parse_vp8_descriptor's (picture id, bits, tid); 0 when truncated */
int sr_vp8_desc(const unsigned char *d, int off, int end, int *picture_id, int *bits, int *tid);

/* media/twcc.py TwccRecorder.on_rtp's search: the 2-byte transport-wide seq of extension id, or -1 */
static int sr_twcc_find(const unsigned char *d, int n, int id) {
    int b0 = d[0];
    if (!(b0 & 0x10)) return -1;
    int p = 12 + ((b0 & 0x0F) << 2);
    if (p + 4 > n) return -1;
    int profile = (d[p] << 8) | d[p + 1];
    int end = p + 4 + (((d[p + 2] << 8) | d[p + 3]) << 2);
    if (end > n) return -1;
    p += 4;
    if (profile == 0xBEDE) {
        while (p < end) {
            int h = d[p];
            if (h == 0) { p++; continue; }
            int xid = h >> 4, ln = (h & 0x0F) + 1;
            if (xid == 15 || p + 1 + ln > end) return -1;
            if (xid == id) return ln == 2 ? ((d[p + 1] << 8) | d[p + 2]) : -1;
            p += 1 + ln;
        }
    } else if ((profile & 0xFFF0) == 0x1000) {
        while (p + 2 <= end) {
            int xid = d[p];
            if (xid == 0) { p++; continue; }
            int ln = d[p + 1];
            if (p + 2 + ln > end) return -1;
            if (xid == id) return ln == 2 ? ((d[p + 2] << 8) | d[p + 3]) : -1;
            p += 2 + ln;
        }
    }
    return -1;
}

static unsigned char sr_ext[SR_RX_SLOT + 64];

static double sr_mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* media/keyframe.py vp8_is_keyframe */
static int sr_vp8_key(const unsigned char *d, int len, int off, int end) {
    if (end > len) end = len;
    if (off >= end) return 0;
    int b0 = d[off];
    if (!(b0 & 0x10) || (b0 & 0x07)) return 0;
    int pos = off + 1;
    if (b0 & 0x80) {
        if (pos >= end) return 0;
        int x = d[pos++];
        if (x & 0x80) {
            if (pos >= end) return 0;
            pos += (d[pos] & 0x80) ? 2 : 1;
        }
        if (x & 0x40) pos++;
        if (x & 0x30) pos++;
    }
    if (pos >= end) return 0;
    return !(d[pos] & 0x01);
}

int sr_rx_packet(sr_rx *rx, sr_rxt *t, unsigned char *pkt, int n, double now) {
    if (n < 12) return 2;
    unsigned int ssrc = ((unsigned int)pkt[8] << 24) | ((unsigned int)pkt[9] << 16) | ((unsigned int)pkt[10] << 8) | pkt[11];
    sr_rstream *s = NULL;
    for (int i = 0; i < t->nstreams; i++) {
        if (t->ssrcs[i] == ssrc) { s = t->streams[i]; break; }
    }
    if (s == NULL || s->gate) return 2;
    int b0 = pkt[0], b1 = pkt[1];
    if ((b0 & 0xC0) != 0x80) return 2;
    int rpt = s->pt_table[b1 & 0x7F];
    if (rpt < 0) return 2;
    int hdr_end = 12 + ((b0 & 0x0F) << 2);
    int profile = 0, pos;
    if (b0 & 0x10) {
        if (hdr_end + 4 > n) return 2;
        profile = (pkt[hdr_end] << 8) | pkt[hdr_end + 1];
        pos = hdr_end + 4 + (((pkt[hdr_end + 2] << 8) | pkt[hdr_end + 3]) << 2);
    } else {
        pos = hdr_end;
    }
    if (pos > n) return 2;
    int pend = n;
    if (b0 & 0x20) {
        int pad = pkt[n - 1];
        if (pad == 0 || pos + pad > n) return 2;
        pend = n - pad;
    }
    unsigned int seq = ((unsigned int)pkt[2] << 8) | pkt[3];
    unsigned int ts = ((unsigned int)pkt[4] << 24) | ((unsigned int)pkt[5] << 16) | ((unsigned int)pkt[6] << 8) | pkt[7];
    if (!s->started || seq != ((s->max_seq + 1) & 0xFFFF)) return 2;  /* RecvStream._track_seq */
    if (now >= s->rate_next) return 2;                                 /* RateMeter sample due */

    /* ---- normalise (RecvStream._make_plan + its application) into rx->out */
    unsigned char *out = rx->out;
    int level = -1, new_pos, out_len;
    if ((b0 & 0x10) || s->slots_len) {
        unsigned char *ext = sr_ext;
        int ol = s->slots_len;
        memcpy(ext, s->slots, (size_t)ol);
        int p = hdr_end + 4;
        if (profile == 0xBEDE) {
            while (p < pos) {
                int h = pkt[p];
                if (h == 0) { p++; continue; }
                int xid = h >> 4;
                if (xid == 15) break;
                int v = p + 1;
                p = v + (h & 0x0F) + 1;
                if (p > pos) break;
                int rid = s->ext_table[xid];
                if (s->twcc_ids[xid]) continue;
                if (rid) {
                    ext[ol++] = (unsigned char)((rid << 4) | (h & 0x0F));
                    memcpy(ext + ol, pkt + v, (size_t)(p - v));
                    ol += p - v;
                    if (rid == s->al_id) level = pkt[v] & 0x7F;
                }
            }
        } else if ((profile & 0xFFF0) == 0x1000) {
            while (p < pos) {
                int xid = pkt[p];
                if (xid == 0) { p++; continue; }
                if (p + 2 > pos) break;
                int ln = pkt[p + 1];
                int v = p + 2;
                p = v + ln;
                if (p > pos) break;
                int rid = s->ext_table[xid];
                if (s->twcc_ids[xid]) continue;
                if (rid && ln > 0 && ln <= 16) {
                    ext[ol++] = (unsigned char)((rid << 4) | (ln - 1));
                    memcpy(ext + ol, pkt + v, (size_t)ln);
                    ol += ln;
                    if (rid == s->al_id) level = pkt[v] & 0x7F;
                }
            }
        }
        int tl = 0;
        if (ol) {
            while (ol & 3) ext[ol++] = 0;
            tl = 4 + ol;
        }
        out_len = hdr_end + tl + (n - pos);
        if (out_len > SR_RX_MAX_OUT) return 2;
        memcpy(out, pkt, (size_t)hdr_end);
        if (tl) {
            out[hdr_end] = 0xBE; out[hdr_end + 1] = 0xDE;
            out[hdr_end + 2] = (unsigned char)((ol >> 2) >> 8); out[hdr_end + 3] = (unsigned char)(ol >> 2);
            memcpy(out + hdr_end + 4, ext, (size_t)ol);
            out[0] = (unsigned char)(b0 | 0x10);
        } else {
            out[0] = (unsigned char)(b0 & 0xEF);
        }
        memcpy(out + hdr_end + tl, pkt + pos, (size_t)(n - pos));
        new_pos = hdr_end + tl;
    } else {
        if (n > SR_RX_MAX_OUT) return 2;
        memcpy(out, pkt, (size_t)n);
        out_len = n;
        new_pos = pos;
    }
    out[1] = (unsigned char)((b1 & 0x80) | rpt);
    int new_end = new_pos + (pend - pos);
    if (s->vp8 && sr_vp8_key(out, out_len, new_pos, new_end)) return 2;  /* keyframes: Python */
    int tid = -1;
    if (s->tl_n > 0) {  /* Producer.receive_rtp: TemporalRates.add(tid, len(pkt), now) */
        int picture_id, bits;
        if (!sr_vp8_desc(out, new_pos, new_end < out_len ? new_end : out_len, &picture_id, &bits, &tid)) tid = -1;
        if (tid >= s->tl_n) tid = -1;
        if (tid >= 0 && now >= s->tl_next[tid]) return 2;  /* its RateMeter sample is due: Python */
    }

    /* ---- commit: RecvStream's in-order path */
    if (seq == 0) s->cycles += SR_SEQ_MOD;
    long long ext_seq = s->cycles + seq;
    s->table[ext_seq & SR_TABLE_MASK] = 1;
    s->max_seq = seq;
    s->ext_max = ext_seq;
    s->received++;
    long long transit = (((long long)(now * s->clock_rate)) - (long long)ts) & 0xFFFFFFFFLL;
    if (s->last_transit >= 0) {
        long long d = transit - s->last_transit;
        if (d < 0) d = -d;
        if (d > 0x7FFFFFFFLL) d = 0x100000000LL - d;
        s->jitter_q4 += d - ((s->jitter_q4 + 8) >> 4);
    }
    s->last_transit = transit;
    s->packets++;
    s->bytes += (unsigned long long)n;
    s->last_seq = (int)seq;
    s->last_ext_seq = ext_seq;
    s->last_ts = ts;
    s->last_marker = (b1 & 0x80) ? 1 : 0;
    s->last_audio_level = level;
    s->last_payload_offset = new_pos;
    s->last_payload_end = new_end;
    s->mid_value_offset = s->mid_slot ? hdr_end + 5 : -1;
    s->last_keyframe = 0;
    s->last_receive_time = now;
    if (level >= 0) {
        s->level_sum += level;
        s->level_count++;
    }
    if (tid >= 0) s->tl_totals[tid] += out_len;
    t->rx_rtp++;
    t->rx_bytes += (unsigned long long)n;
    s->handled++;

    /* ---- Fanout.run */
    if (s->n <= 0) return 0;
    sr_history *hist = s->store ? s->hist : NULL;
    int counts[2];
    int nev = sr_fanout_args(out, out_len, s->key, seq, ts, 0, (long long)s->ssrc, new_pos, new_end,
                             s->mid_value_offset, now, hist, (unsigned long long)ext_seq, -1, s->cs, s->n,
                             s->events, counts);
    s->gated = counts[0];
    s->sent = counts[1];
    if (nev > 0 || s->gated > 0 || (s->store && hist == NULL && s->sent > 0)) {
        s->nev = nev;
        s->out_len = out_len;
        rx->cur_stream = s;
        return 3;
    }
    return 0;
}

int sr_rx_step(sr_rx *rx) {
    for (;;) {
        if (rx->cursor >= rx->count) {
            rx->count = rx->cursor = 0;
            if (rx->left <= 0 || rx->fd < 0) return 0;
            int cap = rx->batch > 0 && rx->batch < SR_RX_BATCH ? rx->batch : SR_RX_BATCH;
            int want = rx->left < cap ? rx->left : cap;
            struct mmsghdr msgs[SR_RX_BATCH];
            struct iovec iov[SR_RX_BATCH];
            memset(msgs, 0, sizeof(struct mmsghdr) * (size_t)want);
            for (int i = 0; i < want; i++) {
                iov[i].iov_base = rx->bufs + (size_t)i * SR_RX_SLOT;
                iov[i].iov_len = SR_RX_SLOT;
                msgs[i].msg_hdr.msg_name = rx->addrs + (size_t)i * SR_RX_ADDR;
                msgs[i].msg_hdr.msg_namelen = SR_RX_ADDR;
                msgs[i].msg_hdr.msg_iov = &iov[i];
                msgs[i].msg_hdr.msg_iovlen = 1;
            }
            int r = recvmmsg(rx->fd, msgs, (unsigned int)want, MSG_DONTWAIT, NULL);
            if (r <= 0) {
                if (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) rx->read_errors++;
                rx->left = 0;
                return 0;
            }
            rx->batches++;
            /* a short batch drained the socket: no second recvmmsg just to read EAGAIN (the loop's
             * level-triggered poll wakes us again for anything that arrives meanwhile) */
            rx->left = r < want ? 0 : rx->left - r;
            for (int i = 0; i < r; i++) {
                int len = (int)msgs[i].msg_len;
                if (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) {
                    rx->read_errors++;  /* bigger than a slot: no RTP is; dropped */
                    len = -1;
                } else {
                    rx->received++;
                    rx->received_bytes += (unsigned long long)len;
                }
                rx->lens[i] = len;
                rx->addrlens[i] = (int)msgs[i].msg_hdr.msg_namelen;
            }
            rx->count = r;
        }
        int i = rx->cursor++;
        int n = rx->lens[i];
        if (n < 0) continue;
        unsigned char *d = rx->bufs + (size_t)i * SR_RX_SLOT;
        rx->cur = d;
        rx->cur_len = n;
        rx->cur_slot = i;
        if (n < 12 || d[0] < 128 || d[0] > 191 || (d[1] > 191 && d[1] < 224)) return 1;  /* not RTP */
        const unsigned char *a = rx->addrs + (size_t)i * SR_RX_ADDR;
        int alen = rx->addrlens[i];
        int r = -1;
        for (int k = 0; k < rx->nroutes; k++) {
            if (rx->routes[k].addrlen == alen && memcmp(rx->routes[k].addr, a, (size_t)alen) == 0) { r = k; break; }
        }
        if (r < 0) return 1;
        sr_rxt *t = rx->routes[r].t;
        if (t == NULL || t->gate) return 1;
        if (t->srtp_ctx) {
            int m = n;
            int rc = ((sr_unprotect_fn)t->srtp_unprotect)(t->srtp_ctx, d, &m);
            if (rc) {  /* libsrtp srtp_err_status_t: 7 auth_fail, 9/10 replay */
                if (rc == 7) t->srtp_auth_failures++;
                else if (rc == 9 || rc == 10) t->srtp_replay_failures++;
                else t->srtp_other_failures++;
                continue;
            }
            t->srtp_unprotected++;
            n = m;
            rx->cur_len = n;
        } else if (t->require_srtp) {
            return 1;
        }
        rx->cur_route = r;
        double now = sr_mono();
        int recorded = 0;
        if (t->twcc_id && n >= 12) {
            if (t->twcc_n >= t->twcc_cap) return 2;  /* Python drains the ring, then takes this one */
            int tw = sr_twcc_find(d, n, t->twcc_id);
            if (tw >= 0) {
                int k = t->twcc_n++;
                t->twcc_seqs[k] = (unsigned int)tw;
                t->twcc_times[k] = now;
                t->twcc_ssrcs[k] = ((unsigned int)d[8] << 24) | ((unsigned int)d[9] << 16) | ((unsigned int)d[10] << 8) | d[11];
                recorded = 1;
            }
        }
        int res = sr_rx_packet(rx, t, d, n, now);
        if (res == 2 && recorded) t->twcc_n--;  /* Python records it itself, after draining the rest */
        if (res) return res;
    }
}
