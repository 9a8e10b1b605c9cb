// Counts a login wait down to zero, then lets the user try again.
(function () {
  const error = document.getElementById("login-error");
  const button = document.getElementById("login-button");
  if (!error || !error.dataset.wait) return;
  let left = parseInt(error.dataset.wait, 10);
  const base = error.textContent.replace(/ ?(Try again|The next attempt is possible) in \d+ s\./, "");
  button.disabled = true;
  const tick = () => {
    if (left <= 0) {
      error.textContent = base ? base + " You can try again now." : "You can try again now.";
      button.disabled = false;
      return;
    }
    error.textContent = (base ? base + " " : "") + "Try again in " + left + " s.";
    left -= 1;
    setTimeout(tick, 1000);
  };
  tick();
})();
