// Pins the prometheus-operator source whose CustomResourceDefinitions (example/prometheus-operator-crd/) give
// the chart tests the monitoring.coreos.com schemas (kubeconform) and CRDs (server-side dry run), offline.
// Nothing is built from it; sipfleet/localenv/kubeschemas.py reads the files of the downloaded module.
module sipfleet.local/promcrds

go 1.25.0

require github.com/prometheus-operator/prometheus-operator v0.85.0
