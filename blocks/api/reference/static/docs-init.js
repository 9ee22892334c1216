// Starts Swagger UI on /docs (blocks/api/reference/docs.py). A file rather than inline code, so the page
// runs under the site's CSP (script-src 'self'); the document's URL comes from the page.
"use strict";

(function start() {
  const root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.openapiUrl,
    dom_id: "#swagger-ui",
    layout: "BaseLayout",
    deepLinking: true,
    showExtensions: true,
    showCommonExtensions: true,
    // No badge from the public validator service: the page talks to this site only.
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
  });
})();
