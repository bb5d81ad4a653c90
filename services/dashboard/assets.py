"""The dashboard's one stylesheet and its one script (it refreshes ``<main>`` when the server
says events arrived)."""

from __future__ import annotations

CSS = """
:root{color-scheme:light}*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;color:#212121;\
background:#fff}
header{display:flex;gap:1.5rem;align-items:center;padding:.6rem 1.2rem;background:#263238;\
color:#fff}
header a{color:#fff}header nav{display:flex;gap:1rem;flex-wrap:wrap}
main{padding:1rem 1.2rem;max-width:1500px}h1{font-size:1.5rem;margin:.2rem 0 .6rem}\
h2{font-size:1.15rem;margin-top:1.6rem}
a{color:#0d47a1}\
a:focus,button:focus,input:focus,select:focus,summary:focus{outline:3px solid #ffab00;\
outline-offset:2px}
table{border-collapse:collapse;margin:.5rem 0;font-size:14px}\
th,td{border-bottom:1px solid #e0e0e0;padding:.3rem .6rem;text-align:left;vertical-align:top}
th{background:#eceff1}caption{text-align:left;font-weight:600;padding:.3rem 0}
.health{display:inline-block;padding:0 .45rem;border-radius:.6rem;color:#fff;font-size:13px;\
font-weight:600;white-space:nowrap}
.muted{color:#616161}\
.controls{display:flex;gap:1rem;flex-wrap:wrap;align-items:end;margin:.3rem 0 .6rem}
.controls label{display:flex;flex-direction:column;font-size:13px}\
.controls input,.controls select{font:inherit;padding:.2rem}
.controls>a{align-self:center}
figure{margin:0}.chart{overflow:auto;border:1px solid #e0e0e0;max-height:80vh;margin:0 0 .8rem}
.chart svg{display:block;width:100%;height:auto}\
.tabs{display:flex;gap:1rem;margin:.3rem 0 .6rem}
.date,time{white-space:nowrap}.table-wrap{overflow-x:auto;max-width:100%}
.table-wrap th[scope=row]{min-width:11em;position:sticky;left:0}
.timeline{list-style:none;padding-left:0;border-left:3px solid #b0bec5;margin-left:.5rem}
.timeline li{margin:0 0 .7rem 0;padding-left:.8rem}.kpis{display:flex;gap:1.2rem;flex-wrap:wrap}
.kpi{border:1px solid #e0e0e0;border-radius:.4rem;padding:.4rem .8rem}\
.kpi b{display:block;font-size:1.3rem}
#live-status{font-size:12px;color:#cfd8dc;margin-left:auto}
"""

LIVE_JS = """
(() => {
  const main = document.querySelector('main[data-live]');
  if (!main || !window.EventSource) return;
  const note = document.getElementById('live-status');
  const source = new EventSource(main.dataset.live);
  let busy = false, again = false;
  async function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    try {
      const res = await fetch(location.href, {headers: {'accept': 'text/html'}});
      // the session ended (signed out, expired, revoked): show the sign-in form, not stale data
      if (res.redirected) { location.assign(res.url); return; }
      if (res.ok) {
        const doc = new DOMParser().parseFromString(await res.text(), 'text/html');
        const fresh = doc.querySelector('main');
        if (fresh) {
          main.innerHTML = fresh.innerHTML;
          note.textContent = 'updated ' + new Date().toLocaleTimeString();
        }
      }
    } finally { busy = false; if (again) { again = false; refresh(); } }
  }
  source.addEventListener('position', refresh);
  source.onopen = () => { note.textContent = 'live'; };
  source.onerror = () => { note.textContent = 'reconnecting…'; };
})();
"""
