/* A measured probe (issue 25, bf16 convolutions on AMX), not part of the library: a
 * stride-1 convolution's forward pass on AMX tiles without im2col. The input is copied
 * once to bf16 in a padded channel-pair layout xb[n][c/2][Hp][Wp][2]; then for tap (r, s)
 * the B tile of an output row is ONE tileloadd at xb[n][0][oh + r][s] with a stride of a
 * channel-pair plane (rows: channel pairs, columns: the row's OW pixels), the A tiles are
 * the tap's weights (16 output channels x C/2 pairs), and four C tiles (2 output rows x 32
 * output channels) accumulate over the taps and are stored straight into NCHW.
 * Limits of the probe: C <= 32, OW <= 16, K a multiple of 32, odd R with padding R/2.
 * Checks two images against a float64 product of the bf16-rounded inputs.
 *
 *   gcc -O2 -march=native bench/amx_conv_probe.c -o /tmp/amx_conv_probe -lm
 *   /tmp/amx_conv_probe [N C HW K R]      (default: MNIST conv2, 100 16 14 32 5) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <math.h>
#include <time.h>
#include <immintrin.h>
#include <unistd.h>
#include <sys/syscall.h>
typedef struct __attribute__((packed)) { uint8_t palette, start_row, reserved[14]; uint16_t colsb[16]; uint8_t rows[16]; } cfg_t;
static uint16_t bf(float f){ uint32_t u; memcpy(&u,&f,4); return (u + 0x7fff + ((u>>16)&1)) >> 16; }
static float fb(uint16_t h){ uint32_t u = (uint32_t)h << 16; float f; memcpy(&f,&u,4); return f; }
double now(){struct timespec t; clock_gettime(CLOCK_MONOTONIC,&t); return t.tv_sec+t.tv_nsec*1e-9;}
int N=100,C=16,H=14,W=14,K=32,R=5,P=2;
int main(int argc, char** argv){
  if (argc > 5) { N=atoi(argv[1]); C=atoi(argv[2]); H=W=atoi(argv[3]); K=atoi(argv[4]); R=atoi(argv[5]); P=R/2; }
  if (C > 32 || W > 16 || K % 32 || R % 2 == 0) {
      fprintf(stderr, "amx_conv_probe: needs C <= 32, HW <= 16, K a multiple of 32, odd R\n");
      return 2;
  }
  if (syscall(SYS_arch_prctl, 0x1023, 18) != 0) {
      fprintf(stderr, "amx_conv_probe: Linux did not grant the AMX tile state (no AMX?)\n");
      return 2;
  }
  int OH=H, OW=W, Hp=H+2*P, Wp=W+2*P, Q=(C+1)/2, T=R*R;
  float* x=malloc(sizeof(float)*N*C*H*W); float* w=malloc(sizeof(float)*K*C*T); float* y=malloc(sizeof(float)*N*K*OH*OW);
  for(long i=0;i<(long)N*C*H*W;i++) x[i]=(float)rand()/RAND_MAX-0.5f;
  for(long i=0;i<(long)K*C*T;i++) w[i]=(float)rand()/RAND_MAX-0.5f;
  /* layouts: xb[n][q][Hp][Wp][2], wb[t][k][q][2] (Q <= 16, K multiple of 32, OW <= 16 for the prototype) */
  /* one row more: an odd OH's last B tile of row oh + 1 reads past the last plane */
  uint16_t* xb=aligned_alloc(64, ((size_t)(N*Q*Hp+1)*Wp*2*2+63)/64*64);
  uint16_t* wb=aligned_alloc(64, ((size_t)T*K*Q*2*2+63)/64*64);
  double tconv = now(), tpack = 0;
  int reps = 20;
  for (int rep = 0; rep < reps; rep++) {
  double t0 = now();
  memset(xb,0,(size_t)N*Q*Hp*Wp*4);
  for(int n=0;n<N;n++) for(int c=0;c<C;c++) for(int h=0;h<H;h++) for(int ww=0;ww<W;ww++)
     xb[((((size_t)n*Q + c/2)*Hp + h+P)*Wp + ww+P)*2 + (c&1)] = bf(x[(((size_t)n*C+c)*H+h)*W+ww]);
  memset(wb,0,(size_t)T*K*Q*4);
  for(int k=0;k<K;k++) for(int c=0;c<C;c++) for(int t=0;t<T;t++)
     wb[(((size_t)t*K + k)*Q + c/2)*2 + (c&1)] = bf(w[((size_t)k*C+c)*T+t]);
  tpack += now() - t0;
  cfg_t cfg; memset(&cfg,0,sizeof cfg); cfg.palette=1;
  for(int i=0;i<4;i++){ cfg.rows[i]=16; cfg.colsb[i]=OW*4; }          /* C: 16 out ch x OW px */
  for(int i=4;i<6;i++){ cfg.rows[i]=16; cfg.colsb[i]=Q*4; }           /* A: 16 out ch x Q pairs */
  for(int i=6;i<8;i++){ cfg.rows[i]=Q; cfg.colsb[i]=OW*4; }           /* B: Q pairs x OW px */
  _tile_loadconfig(&cfg);
  long xs = (long)Hp*Wp*4, ys = (long)OH*OW*4;
  for(int n=0;n<N;n++) for(int kb=0;kb<K;kb+=32) for(int oh=0;oh<OH;oh+=2){
     _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
     for(int r=0;r<R;r++) for(int s=0;s<R;s++){
        int t=r*R+s;
        const uint16_t* b0 = xb + (((size_t)n*Q*Hp + oh+r)*Wp + s)*2;
        _tile_loadd(6, b0, xs);
        _tile_loadd(7, b0 + Wp*2, xs);
        const uint16_t* a = wb + ((size_t)t*K + kb)*Q*2;
        _tile_loadd(4, a, Q*4);
        _tile_loadd(5, a + 16*Q*2, Q*4);
        _tile_dpbf16ps(0,4,6); _tile_dpbf16ps(1,5,6); _tile_dpbf16ps(2,4,7); _tile_dpbf16ps(3,5,7);
     }
     float* yo = y + (((size_t)n*K + kb)*OH + oh)*OW;
     _tile_stored(0, yo, ys); _tile_stored(1, yo + 16*OH*OW, ys);
     if (oh+1 < OH) { _tile_stored(2, yo + OW, ys); _tile_stored(3, yo + 16*OH*OW + OW, ys); }
  }
  _tile_release();
  }
  tconv = (now()-tconv)/reps; tpack /= reps;
  /* check against a float64 reference of rounded inputs, a few images */
  double maxerr=0, maxv=0;
  for(int n=0;n<2;n++) for(int k=0;k<K;k++) for(int oh=0;oh<OH;oh++) for(int ow=0;ow<OW;ow++){
     double acc=0;
     for(int c=0;c<C;c++) for(int r=0;r<R;r++) for(int s=0;s<R;s++){
        int ih=oh+r-P, iw=ow+s-P; if(ih<0||ih>=H||iw<0||iw>=W) continue;
        acc += (double)fb(bf(x[(((size_t)n*C+c)*H+ih)*W+iw])) * fb(bf(w[((size_t)k*C+c)*R*R+r*R+s]));
     }
     double e=fabs(acc - y[(((size_t)n*K+k)*OH+oh)*OW+ow]); if(e>maxerr) maxerr=e; if(fabs(acc)>maxv) maxv=fabs(acc);
  }
  double fl = 2.0*N*K*OH*OW*C*R*R;
  printf("N%d C%d %dx%d K%d %dx%d: %.3f ms on 1 thread (%.3f of it the scalar layout conversion), %.0f GFLOPS (tiles alone %.0f); max err %.2e of %.2f\n", N,C,H,W,K,R,R, tconv*1e3, tpack*1e3, fl/tconv/1e9, fl/(tconv-tpack)/1e9, maxerr, maxv);
}
