"""The review station's one page: a grid of what the bins kept, sorted by what is worth a look (or by how new
each looks, with `smartbin review --rank-with`), filtered by bin, class, device, day and answer; labelled from
the keyboard, one at a time or many at once; every answer saved by the server before the page shows it; the
class -> bin mapping beside the grid.

Keys: arrows (or h j k l) move; space selects; shift+arrows select while moving; a selects what is shown;
Esc clears; 1 2 3 answer with the model's first, second or third guess (its decision, then the top-k);
n "not an item"; u "unsure"; / types a label (Enter answers with it). An answer goes to the selection, or
to the item in focus.

Beside the class table, "train on the answers" starts a training job (convert/review/training.py) and shows
its step and epoch, then the new model against the bins' on the same hold-out, and its training report.
With a broker, "Roll out" lists the bins from their retained status and carries the newest job's bundle
through them in stages (convert/review/page_rollouts.py), its lines shown as they come.
"""

from edge.fleet.rule import DEFAULTS

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="review-token" content="__TOKEN__">
<title>smartbin review</title>
<style>
body{font-family:system-ui,sans-serif;margin:0;background:#f6f7f8;color:#222}
header{position:sticky;top:0;background:#fff;box-shadow:0 1px 3px #0002;padding:.5rem 1rem;z-index:1}
header label{margin-right:.6rem;font-size:.9rem} select,input,button{font-size:.95rem}
main{display:flex;gap:1rem;padding:1rem} #grid{display:flex;flex-wrap:wrap;gap:.5rem;flex:1;align-content:flex-start}
.card{width:170px;background:#fff;border-radius:6px;padding:.3rem;border:3px solid transparent;font-size:.8rem;
 cursor:pointer;position:relative}
.card img{width:100%;height:120px;object-fit:cover;border-radius:4px;display:block}
.card.focus{border-color:#f90} .card.selected{background:#dbeafe} .card .answer{font-weight:bold}
.card.answered{opacity:.75} .guess{color:#555}
.bin-other{color:#555}.bin-kitchen{color:#2a7}.bin-recyclable{color:#27c}.bin-hazardous{color:#c22}
aside{width:260px} aside table{border-collapse:collapse;font-size:.85rem;background:#fff}
aside td{padding:.15rem .4rem;border-bottom:1px solid #eee} #status{margin-left:1rem;color:#27c}
#status.error{color:#c22} #train-bar{height:8px;background:#ddd;border-radius:4px;margin:.4rem 0}
#train-bar div{height:100%;width:0;background:#27c;border-radius:4px} #compare td,#compare th{padding:.15rem .4rem}
#compare{font-size:.85rem;background:#fff;border-collapse:collapse} .better{color:#2a7}.worse{color:#c22}
code{font-size:.75rem;word-break:break-all} #rollout-log{font-size:.72rem;white-space:pre-wrap;max-width:260px}
#fleet{font-size:.8rem;background:#fff;border-collapse:collapse} #fleet td{padding:.1rem .3rem}
kbd{border:1px solid #aaa;border-radius:3px;padding:0 .25rem;font-size:.8rem}
</style></head><body>
<header>
 <label>sort <select id="sort"><option value="worth">worth a look</option><option value="newest">newest</option>
  <option value="confidence">least confident</option><option value="novelty">most novel</option></select></label>
 <label>bin <select id="f-bin"><option value="">all</option></select></label>
 <label>class <select id="f-class"><option value="">all</option></select></label>
 <label>device <select id="f-device"><option value="">all</option></select></label>
 <label>day <select id="f-day"><option value="">all</option></select></label>
 <label>answer <select id="f-state"><option value="open">not answered</option><option value="done">answered</option>
  <option value="">all</option></select></label>
 <br><input id="label" list="labels" placeholder="label (/ to type, Enter to answer)" size="28">
 <datalist id="labels"></datalist>
 <button id="assign">answer with label</button> <button id="not-item">not an item (n)</button>
 <button id="unsure">unsure (u)</button> <span id="count"></span><span id="status"></span>
 <div style="font-size:.8rem;color:#666;margin-top:.3rem"><kbd>←↑→↓</kbd> move <kbd>space</kbd> select
  <kbd>shift</kbd>+arrows select while moving <kbd>a</kbd> all shown <kbd>Esc</kbd> none
  <kbd>1</kbd><kbd>2</kbd><kbd>3</kbd> the model's guess <kbd>n</kbd> not an item <kbd>u</kbd> unsure</div>
</header>
<main><div id="grid"></div>
<aside><h3>Class → bin</h3><table id="classes"></table>
<h3>Train</h3><button id="train-start">train on the answers</button>
<button id="teach-start" hidden>teach the new items (head only)</button><div id="train-state"></div>
<div id="train-bar"><div></div></div><table id="compare"></table><div id="train-links"></div>
<h3>Roll out</h3><div id="fleet-state"></div><table id="fleet"></table><div id="rollout-form">
<label>stages <input id="ro-stages" value="1" size="5"></label> <label>watch s <input id="ro-watch" value="__WATCH__"
 size="4"></label><br><label>min frames <input id="ro-frames" value="__FRAMES__" size="4"></label> <label>max drop
 <input id="ro-drop" value="__DROP__" size="4"></label><br><label>shadow items
 <input id="ro-shadow" value="__SHADOW__" size="3"></label> <label>max flips
 <input id="ro-flips" value="__FLIPS__" size="4"></label><br><label><input type="checkbox" id="ro-force">
 past the hold-out gate</label><br><button id="rollout-start">roll out to a few bins first</button>
<button id="rollout-stop" disabled>stop, put them back</button>
</div><pre id="rollout-log"></pre></aside></main>
<script>
let items=[], classes={}, bins=[], shown=[], focus=0, selected=new Set();
const $=id=>document.getElementById(id);
function esc(s){return String(s??'').replace(/[&<>"]/g,c=>({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c]));}
function status(text,error){const s=$('status');s.textContent=text;s.className=error?'error':'';}
function options(id,values){const sel=$(id),keep=sel.value;
 sel.innerHTML='<option value="">all</option>'+values.map(v=>'<option>'+esc(v)+'</option>').join('');sel.value=keep;}
async function load(){const r=await (await fetch('/api/items')).json();items=r.items;classes=r.classes;bins=r.bins;
 const uniq=f=>[...new Set(items.map(f))].filter(v=>v).sort();
 options('f-bin',bins);options('f-class',uniq(i=>i.label));options('f-device',uniq(i=>i.device));
 options('f-day',uniq(i=>i.day));
 $('labels').innerHTML=Object.keys(classes).map(c=>'<option value="'+esc(c)+'">').join('');
 drawClasses();draw();}
function visible(){const b=$('f-bin').value,c=$('f-class').value,d=$('f-device').value,day=$('f-day').value,
 st=$('f-state').value;
 let out=items.filter(i=>(!b||i.bin===b)&&(!c||i.label===c)&&(!d||i.device===d)&&(!day||i.day===day)
  &&(!st||(st==='open')===!i.answer));
 const by={worth:(x,y)=>y.worth-x.worth||y.ts-x.ts,newest:(x,y)=>y.ts-x.ts,
  confidence:(x,y)=>(x.confidence??0)-(y.confidence??0),novelty:(x,y)=>(y.novelty??-1)-(x.novelty??-1)}[$('sort').value];
 return out.sort(by);}
function answerText(a){if(!a)return '';if(a.verdict==='not_item')return 'not an item';
 if(a.verdict==='unsure')return 'unsure';return '→ '+a.label+(a.by==='bin'?' (at the bin)':'');}
function draw(){shown=visible();focus=Math.max(0,Math.min(focus,shown.length-1));
 $('grid').innerHTML=shown.map((i,n)=>'<div class="card'+(n===focus?' focus':'')+(selected.has(i.id)?' selected':'')
  +(i.answer?' answered':'')+'" data-id="'+esc(i.id)+'" data-n="'+n+'"><img src="/image/'+esc(i.id)+'.jpg" alt="">'
  +'<div><b class="bin-'+esc(i.bin)+'">'+esc(i.label)+'</b> '+((i.confidence??0)*100).toFixed(0)+'%</div>'
  +'<div class="guess">'+i.guesses.slice(1,3).map((g,k)=>(k+2)+': '+esc(g)).join(' · ')+'</div>'
  +'<div class="guess">'+esc(i.device)+' · '+esc(i.day)+(i.novelty==null?'':' · novelty '+i.novelty.toFixed(2))+'</div>'
  +'<div class="answer">'+esc(answerText(i.answer))+'</div></div>').join('');
 $('count').textContent=' '+shown.length+' shown, '+selected.size+' selected, '
  +items.filter(i=>!i.answer).length+' of '+items.length+' not answered';
 const f=$('grid').children[focus];if(f)f.scrollIntoView({block:'nearest'});}
function drawClasses(){$('classes').innerHTML=Object.entries(classes).map(([c,b])=>'<tr><td>'+esc(c)
 +'</td><td><select class="bin" data-label="'+esc(c)+'">'+bins.map(x=>'<option'+(x===b?' selected':'')+'>'+x
 +'</option>').join('')+'</select></td></tr>').join('');}
function targets(){return selected.size?[...selected]:(shown[focus]?[shown[focus].id]:[]);}
const TOKEN=document.querySelector('meta[name=review-token]').content;
async function post(path,body){const r=await fetch(path,{method:'POST',
 headers:{'Content-Type':'application/json','X-Review-Token':TOKEN},
 body:JSON.stringify(body)});const data=await r.json();if(!r.ok)throw new Error(data.error||r.status);return data;}
async function answer(verdict,label){const ids=targets();if(!ids.length)return;
 try{const r=await post('/api/answer',{ids:ids,verdict:verdict,label:label||null});
  const byId=Object.fromEntries(r.items.map(i=>[i.id,i]));items=items.map(i=>byId[i.id]||i);
  if(label&&!(label in classes)){classes[label]='other';drawClasses();}
  selected.clear();status('saved '+r.items.length);draw();}
 catch(e){status('not saved: '+e.message,true);}}
function move(by,extend){if(!shown.length)return;if(extend)selected.add(shown[focus].id);
 focus=Math.max(0,Math.min(shown.length-1,focus+by));if(extend)selected.add(shown[focus].id);draw();}
function columns(){const cards=$('grid').children;if(cards.length<2)return 1;let n=1;
 while(n<cards.length&&cards[n].offsetTop===cards[0].offsetTop)n++;return n;}
document.addEventListener('keydown',e=>{if(e.target.tagName==='INPUT'||e.target.tagName==='SELECT'){
  if(e.target.id==='label'&&e.key==='Enter'){answer('item',e.target.value.trim());e.target.blur();}
  if(e.key==='Escape')e.target.blur();return;}
 const k=e.key,cols=columns();
 if(k==='ArrowRight'||k==='l')move(1,e.shiftKey);else if(k==='ArrowLeft'||k==='h')move(-1,e.shiftKey);
 else if(k==='ArrowDown'||k==='j')move(cols,e.shiftKey);else if(k==='ArrowUp'||k==='k')move(-cols,e.shiftKey);
 else if(k===' '){const id=shown[focus]&&shown[focus].id;
  if(id){selected.has(id)?selected.delete(id):selected.add(id);draw();}}
 else if(k==='a'){shown.forEach(i=>selected.add(i.id));draw();}
 else if(k==='Escape'){selected.clear();draw();}
 else if(k==='1'||k==='2'||k==='3'){const g=shown[focus]&&shown[focus].guesses[Number(k)-1];if(g)answer('item',g);}
 else if(k==='n')answer('not_item');else if(k==='u')answer('unsure');
 else if(k==='/'){$('label').focus();}
 else return;
 e.preventDefault();});
$('grid').onclick=e=>{const c=e.target.closest('.card');if(!c)return;const n=Number(c.dataset.n);
 if(e.shiftKey){const [a,b]=[Math.min(n,focus),Math.max(n,focus)];shown.slice(a,b+1).forEach(i=>selected.add(i.id));}
 else if(e.ctrlKey||e.metaKey){selected.has(c.dataset.id)?selected.delete(c.dataset.id):selected.add(c.dataset.id);}
 focus=n;draw();};
$('assign').onclick=()=>answer('item',$('label').value.trim());
$('not-item').onclick=()=>answer('not_item');$('unsure').onclick=()=>answer('unsure');
for(const id of ['sort','f-bin','f-class','f-device','f-day','f-state'])$(id).onchange=()=>{focus=0;draw();};
$('classes').onchange=async e=>{const s=e.target.closest('select.bin');if(!s)return;
 try{classes=(await post('/api/bins',{label:s.dataset.label,bin:s.value})).classes;status('saved '+s.dataset.label
  +' → '+s.value);}catch(err){status('not saved: '+err.message,true);}drawClasses();};
const STEPS=['pull','train','convert','compare'];
function pct(x){return x==null?'—':(x*100).toFixed(1)+'%';}
async function training(){const r=await (await fetch('/api/training')).json();const job=r.jobs[0];
 $('train-start').disabled=$('teach-start').disabled=!r.configured||(job&&job.state==='running');
 $('teach-start').hidden=!r.teach;
 if(!r.configured){$('train-state').textContent=r.missing;return;}
 if(!job){$('train-state').textContent='the answers, '+r.data+' and the bins’ model on '+r.holdout;return;}
 const steps=job.kind==='head'?['teach','compare']:STEPS;
 const n=steps.indexOf(job.step),epochs=job.step==='train'?Math.min(job.epochs_done/r.epochs,1):0;
 const done=job.state==='done'?1:(n+epochs)/steps.length;$('train-bar').firstChild.style.width=(done*100)+'%';
 $('train-state').textContent=job.id+': '+(job.state==='running'?job.step+(job.step==='train'?' (epoch '+job.epochs_done
  +' of '+r.epochs+')':'')+'…':job.state+(job.error?': '+job.error:''));
 const c=job.comparison;$('compare').innerHTML=c?'<tr><th>on '+c.new.images+' held-out images</th><th>top-1</th>'
  +'<th>bin acc.</th></tr>'+[['the bins now',c.serving],['new',c.new]].map(([name,m])=>'<tr><td>'+name+' ('
  +esc(m.variant)+')</td><td>'+pct(m.top1)+'</td><td>'+pct(m.bin_accuracy)+'</td></tr>').join('')
  +'<tr><td>change</td>'+['top1','bin_accuracy'].map(k=>{const d=c.new[k]-c.serving[k];return '<td class="'
  +(d>=0?'better':'worse')+'">'+(d>=0?'+':'')+(d*100).toFixed(1)+' pts</td>';}).join('')+'</tr>':'';
 const worse=c&&c.new.bin_accuracy<c.serving.bin_accuracy;
 $('train-links').innerHTML=job.state==='done'?'<a id="report" href="/runs/'+esc(job.id)
  +'/report.html" target="_blank">training report</a><p id="verdict">'+(worse?'the new model sorts fewer held-out '
  +'items right than the bins\u2019 model: keep theirs, or review more and train again':'roll it out to a few bins '
  +'first:<br><code>smartbin fleet rollout '+esc(job.bundle)+(job.kind==='head'?' --head-only':'')
  +' --broker HOST:1883</code>')+'</p>':'';
 if(job.state==='running')setTimeout(training,1000);}
$('train-start').onclick=async()=>{try{await post('/api/training',{});status('training started');training();}
 catch(e){status('not started: '+e.message,true);}};
$('teach-start').onclick=async()=>{try{await post('/api/training',{kind:'head'});status('teaching started');
 training();}catch(e){status('not started: '+e.message,true);}};
async function fleet(){const r=await (await fetch('/api/fleet')).json();
 if(!r.configured){$('fleet-state').textContent=r.missing;$('rollout-form').style.display='none';return;}
 $('fleet').innerHTML=r.devices.map(b=>'<tr><td>'+esc(b.device)+'</td><td>'+esc(b.state)+', '+esc(b.health)
  +'</td><td>'+esc(b.model)+'</td></tr>').join('');
 const ro=r.rollout,running=ro&&ro.state==='running';$('rollout-start').disabled=running;
 $('rollout-stop').disabled=!running;
 $('fleet-state').textContent=r.devices.length+' bin(s) on the broker'+(ro?'; rollout '+ro.state:'');
 $('rollout-log').textContent=ro?ro.lines.join('\\n')+(ro.error?'\\n'+ro.error:''):'';
 setTimeout(fleet,running?1000:3000);}
$('rollout-stop').onclick=async()=>{try{await post('/api/rollout/stop',{});status('stopping the rollout');}
 catch(e){status('not stopped: '+e.message,true);}};
$('rollout-start').onclick=async()=>{try{await post('/api/rollout',{stages:$('ro-stages').value,
 watch:Number($('ro-watch').value),min_frames:Number($('ro-frames').value),max_confidence_drop:Number($('ro-drop').value),
 shadow_items:Number($('ro-shadow').value),max_flips:Number($('ro-flips').value),force:$('ro-force').checked});
 status('rollout started');}catch(e){status('not started: '+e.message,true);}};
load();training();fleet();
</script></body></html>"""


def page_html(token: str) -> str:
    """The page with this run's token and the rollout rule's defaults (edge/fleet/rule.py, the command line's)."""
    d = DEFAULTS
    html = PAGE.replace("__TOKEN__", token)
    for key, value in (
        ("__WATCH__", d.watch_s),
        ("__FRAMES__", d.min_frames),
        ("__DROP__", d.max_confidence_drop),
        ("__SHADOW__", d.shadow_items),
        ("__FLIPS__", d.max_flips),
    ):
        html = html.replace(key, f"{value:g}")
    return html
