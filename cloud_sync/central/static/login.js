document.getElementById("login").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const f = ev.target;
  const r = await fetch("/api/v1/login", {
    method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify({username: f.username.value, password: f.password.value}),
  });
  if (r.ok) { location.href = "/"; return; }
  document.getElementById("error").textContent = (await r.json()).error || "sign-in failed";
});
