import { render } from "preact";
import { App } from "./app";
import { prefetchInbox } from "./pages/inbox";
import { interceptLinks } from "./router";
import "./styles.css";

if (location.pathname === "/inbox" || location.pathname.startsWith("/inbox/")) prefetchInbox();
const root = document.getElementById("app") as HTMLElement;
interceptLinks(document.body);
render(<App />, root);
