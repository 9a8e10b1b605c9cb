// The report's print button (a file, not an inline handler: the page's CSP allows no inline script).
"use strict";
document.getElementById("print").addEventListener("click", () => window.print());
