"use strict";
// Posts the credentials as JSON; the server answers with an HttpOnly session cookie.
document.getElementById("login").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const error = document.getElementById("login-error");
  const button = document.getElementById("submit");
  error.hidden = true;
  button.disabled = true;
  try {
    const res = await fetch("/auth/login", {
      method: "POST",
      credentials: "same-origin",
      headers: {"Content-Type": "application/json"},
      body: JSON.stringify({
        username: document.getElementById("username").value,
        password: document.getElementById("password").value,
      }),
    });
    if (res.ok) {
      window.location.assign("/");
      return;
    }
    const body = await res.json().catch(() => ({}));
    error.textContent = res.status === 429 ? "Too many attempts. Wait a few minutes and try again."
      : (typeof body.detail === "string" ? body.detail : "Login failed.");
  } catch (e) {
    error.textContent = "The hub is not reachable.";
  }
  error.hidden = false;
  button.disabled = false;
});
