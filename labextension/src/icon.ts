/** The Code Mode icon (the Tools panel's tab in the sidebar). */
import { LabIcon } from '@jupyterlab/ui-components';

const ICON_SVG = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <g class="jp-icon3" fill="#616161">
    <path d="M8.6 16.6 4 12l4.6-4.6L7.2 6 1.2 12l6 6zm6.8 0L20 12l-4.6-4.6L16.8 6l6 6-6 6z"/>
    <path d="M13.4 4h-2.1l-2.7 16h2.1z"/>
  </g>
</svg>`;

/** The sidebar icon. */
export const codemodeIcon = new LabIcon({
  name: 'codemode-jupyter:tools',
  svgstr: ICON_SVG
});
