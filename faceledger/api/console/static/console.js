// faceledger console: the one script of its pages. An erasure or withdrawal cannot be undone, so
// forms that do one ask first (the server needs no script: without it, the form is sent as is).
document.addEventListener("submit", (event) => {
  const question = event.target.dataset.confirm;
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});
