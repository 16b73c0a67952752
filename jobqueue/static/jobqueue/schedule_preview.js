/* The schedule form's "next runs": refreshed while the cron, interval or time zone is typed. */
"use strict";
window.addEventListener("load", function () {
    var list = document.getElementById("schedule-preview");
    var error = document.getElementById("schedule-preview-error");
    if (!list) { return; }
    var fields = ["id_cron", "id_interval", "id_timezone"].map(function (id) {
        return document.getElementById(id);
    });
    var pending = null;
    function refresh() {
        var query = new URLSearchParams({
            cron: fields[0].value, interval: fields[1].value, timezone: fields[2].value
        });
        fetch(list.dataset.url + "?" + query.toString(), {credentials: "same-origin"})
            .then(function (response) { return response.json(); })
            .then(function (data) {
                list.replaceChildren.apply(list, data.times.map(function (time) {
                    var item = document.createElement("li");
                    item.textContent = time;
                    return item;
                }));
                error.textContent = data.error;
                error.style.display = data.error ? "" : "none";  // .errornote sets display
                list.dataset.state = "fresh";
            });
    }
    fields.forEach(function (field) {
        field.addEventListener("input", function () {
            list.dataset.state = "pending";
            clearTimeout(pending);
            pending = setTimeout(refresh, 250);
        });
    });
});
