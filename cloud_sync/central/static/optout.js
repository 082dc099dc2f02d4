document.getElementById("optout").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const out = document.getElementById("result");
  const r = await fetch("/api/v1/optout", {
    method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify({mac: ev.target.mac.value}),
  });
  const body = await r.json();
  out.className = r.ok ? "ok" : "error";
  out.textContent = r.ok ? body.message : body.error || "failed";
  if (r.ok) ev.target.mac.value = "";
});
