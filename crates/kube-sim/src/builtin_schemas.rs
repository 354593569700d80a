//! Hand-written OpenAPI v3 schemas for the built-in kinds.
//!
//! They carry what the simulator and kubectl need: structure for server-side
//! apply (`x-kubernetes-list-type`, `x-kubernetes-list-map-keys`,
//! `x-kubernetes-map-type`), strategic merge patch (`x-kubernetes-patch-merge-key`,
//! `x-kubernetes-patch-strategy`) and descriptions for `kubectl explain`. They are
//! deliberately far smaller than the real ones (no `$ref`s, many fields left out;
//! fields not described here are stored as given, unvalidated).

use serde_json::{Map, Value, json};

fn s(d: &str) -> Value {
    json!({"type": "string", "description": d})
}
fn i(d: &str) -> Value {
    json!({"type": "integer", "format": "int32", "description": d})
}
fn b(d: &str) -> Value {
    json!({"type": "boolean", "description": d})
}
fn ios(d: &str) -> Value {
    json!({"x-kubernetes-int-or-string": true, "description": d})
}
fn obj(d: &str, props: Vec<(&str, Value)>) -> Value {
    let mut m = Map::new();
    for (k, v) in props {
        m.insert(k.to_string(), v);
    }
    json!({"type": "object", "description": d, "properties": m})
}
fn free(d: &str) -> Value {
    json!({"type": "object", "description": d, "x-kubernetes-preserve-unknown-fields": true})
}
fn smap(d: &str) -> Value {
    json!({"type": "object", "description": d, "additionalProperties": {"type": "string"}})
}
fn atomic_list(d: &str, item: Value) -> Value {
    json!({"type": "array", "description": d, "items": item, "x-kubernetes-list-type": "atomic"})
}
fn set_list(d: &str) -> Value {
    json!({"type": "array", "description": d, "items": {"type": "string"}, "x-kubernetes-list-type": "set", "x-kubernetes-patch-strategy": "merge"})
}
fn list_map(d: &str, keys: &[&str], patch_key: &str, item: Value) -> Value {
    json!({"type": "array", "description": d, "items": item,
        "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": keys,
        "x-kubernetes-patch-merge-key": patch_key, "x-kubernetes-patch-strategy": "merge"})
}
fn with_required(mut v: Value, req: &[&str]) -> Value {
    v["required"] = json!(req);
    v
}
fn atomic_map(mut v: Value) -> Value {
    v["x-kubernetes-map-type"] = json!("atomic");
    v
}

/// `ObjectMeta`.
pub fn object_meta() -> Value {
    obj(
        "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata",
        vec![
            ("name", s("Name must be unique within a namespace.")),
            (
                "generateName",
                s(
                    "GenerateName is an optional prefix, used by the server, to generate a unique name ONLY IF the Name field has not been provided.",
                ),
            ),
            (
                "namespace",
                s("Namespace defines the space within which each name must be unique."),
            ),
            (
                "labels",
                smap(
                    "Map of string keys and values that can be used to organize and categorize (scope and select) objects.",
                ),
            ),
            (
                "annotations",
                smap(
                    "Annotations is an unstructured key value map stored with a resource that may be set by external tools to store and retrieve arbitrary metadata.",
                ),
            ),
            (
                "finalizers",
                set_list("Must be empty before the object is deleted from the registry."),
            ),
            (
                "ownerReferences",
                list_map(
                    "List of objects depended by this object.",
                    &["uid"],
                    "uid",
                    with_required(
                        obj(
                            "OwnerReference contains enough information to let you identify an owning object.",
                            vec![
                                ("apiVersion", s("API version of the referent.")),
                                ("kind", s("Kind of the referent.")),
                                ("name", s("Name of the referent.")),
                                ("uid", s("UID of the referent.")),
                                (
                                    "controller",
                                    b("If true, this reference points to the managing controller."),
                                ),
                                (
                                    "blockOwnerDeletion",
                                    b(
                                        "If true, AND if the owner has the \"foregroundDeletion\" finalizer, then the owner cannot be deleted from the key-value store until this reference is removed.",
                                    ),
                                ),
                            ],
                        ),
                        &["apiVersion", "kind", "name", "uid"],
                    ),
                ),
            ),
            (
                "uid",
                s("UID is the unique in time and space value for this object."),
            ),
            (
                "resourceVersion",
                s("An opaque value that represents the internal version of this object."),
            ),
            (
                "generation",
                json!({"type": "integer", "format": "int64", "description": "A sequence number representing a specific generation of the desired state."}),
            ),
            (
                "creationTimestamp",
                json!({"type": "string", "format": "date-time", "description": "CreationTimestamp is a timestamp representing the server time when this object was created."}),
            ),
            (
                "deletionTimestamp",
                json!({"type": "string", "format": "date-time", "description": "DeletionTimestamp is RFC 3339 date and time at which this resource will be deleted."}),
            ),
            (
                "deletionGracePeriodSeconds",
                json!({"type": "integer", "format": "int64", "description": "Number of seconds allowed for this object to gracefully terminate before it will be removed from the system."}),
            ),
            (
                "managedFields",
                atomic_list(
                    "ManagedFields maps workflow-id and version to the set of fields that are managed by that workflow.",
                    free("ManagedFieldsEntry"),
                ),
            ),
        ],
    )
}

fn top(kind_desc: &str, props: Vec<(&str, Value)>) -> Value {
    let mut all = vec![
        (
            "apiVersion",
            s("APIVersion defines the versioned schema of this representation of an object."),
        ),
        (
            "kind",
            s("Kind is a string value representing the REST resource this object represents."),
        ),
        ("metadata", object_meta()),
    ];
    all.extend(props);
    obj(kind_desc, all)
}

fn container() -> Value {
    let env_var = with_required(
        obj(
            "EnvVar represents an environment variable present in a Container.",
            vec![
                ("name", s("Name of the environment variable.")),
                (
                    "value",
                    s(
                        "Variable references $(VAR_NAME) are expanded using the previously defined environment variables in the container.",
                    ),
                ),
                (
                    "valueFrom",
                    free("Source for the environment variable's value."),
                ),
            ],
        ),
        &["name"],
    );
    let port = with_required(
        obj(
            "ContainerPort represents a network port in a single container.",
            vec![
                ("name", s("Name of the port.")),
                (
                    "containerPort",
                    i("Number of port to expose on the pod's IP address."),
                ),
                (
                    "protocol",
                    json!({"type": "string", "default": "TCP", "description": "Protocol for port. Must be UDP, TCP, or SCTP. Defaults to \"TCP\"."}),
                ),
                ("hostPort", i("Number of port to expose on the host.")),
            ],
        ),
        &["containerPort"],
    );
    let mount = with_required(
        obj(
            "VolumeMount describes a mounting of a Volume within a container.",
            vec![
                ("name", s("This must match the Name of a Volume.")),
                (
                    "mountPath",
                    s("Path within the container at which the volume should be mounted."),
                ),
                ("readOnly", b("Mounted read-only if true.")),
                (
                    "subPath",
                    s(
                        "Path within the volume from which the container's volume should be mounted.",
                    ),
                ),
            ],
        ),
        &["name", "mountPath"],
    );
    with_required(
        obj(
            "A single application container that you want to run within a pod.",
            vec![
                ("name", s("Name of the container specified as a DNS_LABEL.")),
                ("image", s("Container image name.")),
                ("imagePullPolicy", s("Image pull policy.")),
                (
                    "command",
                    atomic_list("Entrypoint array.", json!({"type": "string"})),
                ),
                (
                    "args",
                    atomic_list("Arguments to the entrypoint.", json!({"type": "string"})),
                ),
                ("workingDir", s("Container's working directory.")),
                (
                    "env",
                    list_map(
                        "List of environment variables to set in the container.",
                        &["name"],
                        "name",
                        env_var,
                    ),
                ),
                (
                    "envFrom",
                    atomic_list(
                        "List of sources to populate environment variables in the container.",
                        free("EnvFromSource"),
                    ),
                ),
                (
                    "ports",
                    list_map(
                        "List of ports to expose from the container.",
                        &["containerPort", "protocol"],
                        "containerPort",
                        port,
                    ),
                ),
                (
                    "volumeMounts",
                    list_map(
                        "Pod volumes to mount into the container's filesystem.",
                        &["mountPath"],
                        "mountPath",
                        mount,
                    ),
                ),
                (
                    "resources",
                    obj(
                        "Compute Resources required by this container.",
                        vec![
                            (
                                "limits",
                                json!({"type": "object", "additionalProperties": {"x-kubernetes-int-or-string": true}, "description": "Limits describes the maximum amount of compute resources allowed."}),
                            ),
                            (
                                "requests",
                                json!({"type": "object", "additionalProperties": {"x-kubernetes-int-or-string": true}, "description": "Requests describes the minimum amount of compute resources required."}),
                            ),
                        ],
                    ),
                ),
                (
                    "livenessProbe",
                    free("Periodic probe of container liveness."),
                ),
                (
                    "readinessProbe",
                    free("Periodic probe of container service readiness."),
                ),
                (
                    "startupProbe",
                    free("StartupProbe indicates that the Pod has successfully initialized."),
                ),
                (
                    "securityContext",
                    free(
                        "SecurityContext defines the security options the container should be run with.",
                    ),
                ),
                (
                    "terminationMessagePath",
                    s(
                        "Path at which the file to which the container's termination message will be written is mounted.",
                    ),
                ),
                (
                    "terminationMessagePolicy",
                    s("Indicate how the termination message should be populated."),
                ),
            ],
        ),
        &["name"],
    )
}

fn pod_template() -> Value {
    let volume = with_required(
        json!({"type": "object", "description": "Volume represents a named volume in a pod that may be accessed by any container in the pod.",
            "properties": {"name": {"type": "string", "description": "name of the volume."}},
            "x-kubernetes-preserve-unknown-fields": true}),
        &["name"],
    );
    let local_ref = with_required(
        atomic_map(obj(
            "LocalObjectReference contains enough information to let you locate the referenced object inside the same namespace.",
            vec![("name", s("Name of the referent."))],
        )),
        &[],
    );
    obj(
        "Template describes the pods that will be created.",
        vec![
            ("metadata", object_meta()),
            (
                "spec",
                obj(
                    "Specification of the desired behavior of the pod.",
                    vec![
                        (
                            "containers",
                            list_map(
                                "List of containers belonging to the pod.",
                                &["name"],
                                "name",
                                container(),
                            ),
                        ),
                        (
                            "initContainers",
                            list_map(
                                "List of initialization containers belonging to the pod.",
                                &["name"],
                                "name",
                                container(),
                            ),
                        ),
                        (
                            "volumes",
                            list_map(
                                "List of volumes that can be mounted by containers belonging to the pod.",
                                &["name"],
                                "name",
                                volume,
                            ),
                        ),
                        (
                            "imagePullSecrets",
                            list_map(
                                "ImagePullSecrets is an optional list of references to secrets in the same namespace to use for pulling any of the images used by this PodSpec.",
                                &["name"],
                                "name",
                                local_ref,
                            ),
                        ),
                        (
                            "serviceAccountName",
                            s(
                                "ServiceAccountName is the name of the ServiceAccount to use to run this pod.",
                            ),
                        ),
                        (
                            "nodeSelector",
                            atomic_map(smap(
                                "NodeSelector is a selector which must be true for the pod to fit on a node.",
                            )),
                        ),
                        (
                            "restartPolicy",
                            s("Restart policy for all containers within the pod."),
                        ),
                        (
                            "terminationGracePeriodSeconds",
                            json!({"type": "integer", "format": "int64", "description": "Optional duration in seconds the pod needs to terminate gracefully."}),
                        ),
                        ("dnsPolicy", s("Set DNS policy for the pod.")),
                        (
                            "schedulerName",
                            s("If specified, the pod will be dispatched by specified scheduler."),
                        ),
                        (
                            "securityContext",
                            free(
                                "SecurityContext holds pod-level security attributes and common container settings.",
                            ),
                        ),
                        (
                            "affinity",
                            free("If specified, the pod's scheduling constraints"),
                        ),
                        (
                            "tolerations",
                            atomic_list("If specified, the pod's tolerations.", free("Toleration")),
                        ),
                    ],
                ),
            ),
        ],
    )
}

fn label_selector() -> Value {
    atomic_map(obj(
        "A label selector is a label query over a set of resources.",
        vec![
            (
                "matchLabels",
                smap("matchLabels is a map of {key,value} pairs."),
            ),
            (
                "matchExpressions",
                atomic_list(
                    "matchExpressions is a list of label selector requirements.",
                    free("LabelSelectorRequirement"),
                ),
            ),
        ],
    ))
}

fn network_policy_spec() -> Value {
    let port = obj(
        "NetworkPolicyPort describes a port to allow traffic on",
        vec![
            (
                "protocol",
                s(
                    "protocol represents the protocol (TCP, UDP, or SCTP) which traffic must match. If not specified, this field defaults to TCP.",
                ),
            ),
            (
                "port",
                ios(
                    "port represents the port on the given protocol. This can either be a numerical or named port on a pod.",
                ),
            ),
            (
                "endPort",
                i(
                    "endPort indicates that the range of ports from port to endPort if set, inclusive, should be allowed by the policy.",
                ),
            ),
        ],
    );
    let ip_block = with_required(
        obj(
            "ipBlock defines policy on a particular IPBlock.",
            vec![
                (
                    "cidr",
                    s(
                        "cidr is a string representing the IPBlock Valid examples are \"192.168.1.0/24\" or \"2001:db8::/64\"",
                    ),
                ),
                (
                    "except",
                    atomic_list(
                        "except is a slice of CIDRs that should not be included within an IPBlock",
                        json!({"type": "string"}),
                    ),
                ),
            ],
        ),
        &["cidr"],
    );
    let peer = obj(
        "NetworkPolicyPeer describes a peer to allow traffic to/from. Only certain combinations of fields are allowed",
        vec![
            ("podSelector", label_selector()),
            ("namespaceSelector", label_selector()),
            ("ipBlock", ip_block),
        ],
    );
    let rule = |d: &str, peers: &str, peers_d: &str| {
        obj(
            d,
            vec![
                (
                    "ports",
                    atomic_list(
                        "ports is a list of ports which should be made accessible on the pods selected for this rule.",
                        port.clone(),
                    ),
                ),
                (peers, atomic_list(peers_d, peer.clone())),
            ],
        )
    };
    obj(
        "spec represents the specification of the desired behavior for this NetworkPolicy.",
        vec![
            ("podSelector", label_selector()),
            (
                "ingress",
                atomic_list(
                    "ingress is a list of ingress rules to be applied to the selected pods.",
                    rule(
                        "NetworkPolicyIngressRule describes a particular set of traffic that is allowed to the pods matched by a NetworkPolicySpec's podSelector.",
                        "from",
                        "from is a list of sources which should be able to access the pods selected for this rule.",
                    ),
                ),
            ),
            (
                "egress",
                atomic_list(
                    "egress is a list of egress rules to be applied to the selected pods.",
                    rule(
                        "NetworkPolicyEgressRule describes a particular set of traffic that is allowed out of pods matched by a NetworkPolicySpec's podSelector.",
                        "to",
                        "to is a list of destinations for outgoing traffic of pods selected for this rule.",
                    ),
                ),
            ),
            (
                "policyTypes",
                atomic_list(
                    "policyTypes is a list of rule types that the NetworkPolicy relates to. Valid options are [\"Ingress\"], [\"Egress\"], or [\"Ingress\", \"Egress\"].",
                    json!({"type": "string"}),
                ),
            ),
        ],
    )
}

fn conditions(d: &str) -> Value {
    list_map(
        d,
        &["type"],
        "type",
        with_required(
            obj(
                "Condition.",
                vec![
                    ("type", s("Type of condition.")),
                    (
                        "status",
                        s("Status of the condition, one of True, False, Unknown."),
                    ),
                    (
                        "reason",
                        s("The reason for the condition's last transition."),
                    ),
                    (
                        "message",
                        s("A human readable message indicating details about the transition."),
                    ),
                    (
                        "lastUpdateTime",
                        json!({"type": "string", "format": "date-time", "description": "The last time this condition was updated."}),
                    ),
                    (
                        "lastTransitionTime",
                        json!({"type": "string", "format": "date-time", "description": "Last time the condition transitioned from one status to another."}),
                    ),
                    (
                        "observedGeneration",
                        json!({"type": "integer", "format": "int64"}),
                    ),
                ],
            ),
            &["type", "status"],
        ),
    )
}

/// Schema of one built-in kind (by `group/kind`), or `None` for kinds the
/// simulator only stores.
pub fn schema_for(group: &str, kind: &str) -> Value {
    match (group, kind) {
        ("apps", "Deployment") => top(
            "Deployment enables declarative updates for Pods and ReplicaSets.",
            vec![
                (
                    "spec",
                    obj(
                        "Specification of the desired behavior of the Deployment.",
                        vec![
                            ("replicas", i("Number of desired pods. Defaults to 1.")),
                            ("selector", label_selector()),
                            ("template", pod_template()),
                            (
                                "strategy",
                                obj(
                                    "The deployment strategy to use to replace existing pods with new ones.",
                                    vec![
                                        (
                                            "type",
                                            s(
                                                "Type of deployment. Can be \"Recreate\" or \"RollingUpdate\".",
                                            ),
                                        ),
                                        (
                                            "rollingUpdate",
                                            obj(
                                                "Rolling update config params.",
                                                vec![
                                                    (
                                                        "maxSurge",
                                                        ios(
                                                            "The maximum number of pods that can be scheduled above the desired number of pods.",
                                                        ),
                                                    ),
                                                    (
                                                        "maxUnavailable",
                                                        ios(
                                                            "The maximum number of pods that can be unavailable during the update.",
                                                        ),
                                                    ),
                                                ],
                                            ),
                                        ),
                                    ],
                                ),
                            ),
                            (
                                "minReadySeconds",
                                i(
                                    "Minimum number of seconds for which a newly created pod should be ready.",
                                ),
                            ),
                            (
                                "revisionHistoryLimit",
                                i("The number of old ReplicaSets to retain to allow rollback."),
                            ),
                            ("paused", b("Indicates that the deployment is paused.")),
                            (
                                "progressDeadlineSeconds",
                                i(
                                    "The maximum time in seconds for a deployment to make progress before it is considered to be failed.",
                                ),
                            ),
                        ],
                    ),
                ),
                (
                    "status",
                    obj(
                        "Most recently observed status of the Deployment.",
                        vec![
                            (
                                "observedGeneration",
                                json!({"type": "integer", "format": "int64", "description": "The generation observed by the deployment controller."}),
                            ),
                            (
                                "replicas",
                                i(
                                    "Total number of non-terminated pods targeted by this deployment (their labels match the selector).",
                                ),
                            ),
                            (
                                "updatedReplicas",
                                i(
                                    "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
                                ),
                            ),
                            (
                                "readyReplicas",
                                i(
                                    "Total number of non-terminated pods targeted by this Deployment with a Ready Condition.",
                                ),
                            ),
                            (
                                "availableReplicas",
                                i(
                                    "Total number of available non-terminated pods (ready for at least minReadySeconds) targeted by this deployment.",
                                ),
                            ),
                            (
                                "unavailableReplicas",
                                i("Total number of unavailable pods targeted by this deployment."),
                            ),
                            (
                                "conditions",
                                conditions(
                                    "Represents the latest available observations of a deployment's current state.",
                                ),
                            ),
                            (
                                "collisionCount",
                                i("Count of hash collisions for the Deployment."),
                            ),
                        ],
                    ),
                ),
            ],
        ),
        ("apps", "ReplicaSet") => top(
            "ReplicaSet ensures that a specified number of pod replicas are running at any given time.",
            vec![
                (
                    "spec",
                    obj(
                        "Spec defines the specification of the desired behavior of the ReplicaSet.",
                        vec![
                            ("replicas", i("Replicas is the number of desired pods.")),
                            (
                                "minReadySeconds",
                                i(
                                    "Minimum number of seconds for which a newly created pod should be ready.",
                                ),
                            ),
                            ("selector", label_selector()),
                            ("template", pod_template()),
                        ],
                    ),
                ),
                (
                    "status",
                    obj(
                        "Status is the most recently observed status of the ReplicaSet.",
                        vec![
                            (
                                "replicas",
                                i(
                                    "Replicas is the most recently observed number of non-terminating pods.",
                                ),
                            ),
                            (
                                "fullyLabeledReplicas",
                                i(
                                    "The number of non-terminating pods that have labels matching the labels of the pod template of the replicaset.",
                                ),
                            ),
                            (
                                "readyReplicas",
                                i(
                                    "The number of non-terminating pods targeted by this ReplicaSet with a Ready Condition.",
                                ),
                            ),
                            (
                                "availableReplicas",
                                i(
                                    "The number of available non-terminating pods (ready for at least minReadySeconds) for this replica set.",
                                ),
                            ),
                            (
                                "observedGeneration",
                                json!({"type": "integer", "format": "int64", "description": "ObservedGeneration reflects the generation of the most recently observed ReplicaSet."}),
                            ),
                            (
                                "conditions",
                                conditions(
                                    "Represents the latest available observations of a replica set's current state.",
                                ),
                            ),
                        ],
                    ),
                ),
            ],
        ),
        ("", "Secret") => top(
            "Secret holds secret data of a certain type.",
            vec![
                (
                    "data",
                    json!({"type": "object", "additionalProperties": {"type": "string", "format": "byte"}, "description": "Data contains the secret data. Each key must consist of alphanumeric characters, '-', '_' or '.'. The serialized form of the secret data is a base64 encoded string."}),
                ),
                (
                    "stringData",
                    smap(
                        "stringData allows specifying non-binary secret data in string form. It is provided as a write-only input field for convenience.",
                    ),
                ),
                (
                    "type",
                    s("Used to facilitate programmatic handling of secret data."),
                ),
                (
                    "immutable",
                    b(
                        "Immutable, if set to true, ensures that data stored in the Secret cannot be updated (only object metadata can be modified).",
                    ),
                ),
            ],
        ),
        ("", "ConfigMap") => top(
            "ConfigMap holds configuration data for pods to consume.",
            vec![
                ("data", smap("Data contains the configuration data.")),
                (
                    "binaryData",
                    json!({"type": "object", "additionalProperties": {"type": "string", "format": "byte"}, "description": "BinaryData contains the binary data."}),
                ),
                (
                    "immutable",
                    b(
                        "Immutable, if set to true, ensures that data stored in the ConfigMap cannot be updated (only object metadata can be modified).",
                    ),
                ),
            ],
        ),
        ("", "Namespace") => top(
            "Namespace provides a scope for Names. Use of multiple namespaces is optional.",
            vec![
                (
                    "spec",
                    obj(
                        "Spec defines the behavior of the Namespace.",
                        vec![(
                            "finalizers",
                            atomic_list(
                                "Finalizers is an opaque list of values that must be empty to permanently remove object from storage.",
                                json!({"type": "string"}),
                            ),
                        )],
                    ),
                ),
                (
                    "status",
                    obj(
                        "Status describes the current status of a Namespace.",
                        vec![
                            (
                                "phase",
                                s("Phase is the current lifecycle phase of the namespace."),
                            ),
                            (
                                "conditions",
                                conditions(
                                    "Represents the latest available observations of a namespace's current state.",
                                ),
                            ),
                        ],
                    ),
                ),
            ],
        ),
        ("", "Service") => top(
            "Service is a named abstraction of software service.",
            vec![
                (
                    "spec",
                    obj(
                        "Spec defines the behavior of a service.",
                        vec![
                            (
                                "ports",
                                list_map(
                                    "The list of ports that are exposed by this service.",
                                    &["port", "protocol"],
                                    "port",
                                    free("ServicePort"),
                                ),
                            ),
                            (
                                "selector",
                                atomic_map(smap(
                                    "Route service traffic to pods with label keys and values matching this selector.",
                                )),
                            ),
                            ("type", s("type determines how the Service is exposed.")),
                            (
                                "clusterIP",
                                s("clusterIP is the IP address of the service."),
                            ),
                        ],
                    ),
                ),
                (
                    "status",
                    free("Most recently observed status of the service."),
                ),
            ],
        ),
        ("networking.k8s.io", "NetworkPolicy") => top(
            "NetworkPolicy describes what network traffic is allowed for a set of Pods",
            vec![("spec", network_policy_spec())],
        ),
        ("", "Pod") => top(
            "Pod is a collection of containers that can run on a host.",
            vec![
                ("spec", pod_template()["properties"]["spec"].clone()),
                ("status", free("Most recently observed status of the pod.")),
            ],
        ),
        ("apiextensions.k8s.io", "CustomResourceDefinition") => top(
            "CustomResourceDefinition represents a resource that should be exposed on the API server.",
            vec![
                (
                    "spec",
                    obj(
                        "spec describes how the user wants the resources to appear",
                        vec![
                            (
                                "group",
                                s("group is the API group of the defined custom resource."),
                            ),
                            (
                                "names",
                                free(
                                    "names specify the resource and kind names for the custom resource.",
                                ),
                            ),
                            (
                                "scope",
                                s(
                                    "scope indicates whether the defined custom resource is cluster- or namespace-scoped.",
                                ),
                            ),
                            (
                                "versions",
                                list_map(
                                    "versions is the list of all API versions of the defined custom resource.",
                                    &["name"],
                                    "name",
                                    free("CustomResourceDefinitionVersion"),
                                ),
                            ),
                            (
                                "conversion",
                                free("conversion defines conversion settings for the CRD."),
                            ),
                            (
                                "preserveUnknownFields",
                                b(
                                    "preserveUnknownFields indicates that object fields which are not specified in the OpenAPI schema should be preserved when persisting to storage.",
                                ),
                            ),
                        ],
                    ),
                ),
                (
                    "status",
                    obj(
                        "status indicates the actual state of the CustomResourceDefinition",
                        vec![
                            (
                                "conditions",
                                conditions(
                                    "conditions indicate state for particular aspects of a CustomResourceDefinition",
                                ),
                            ),
                            (
                                "acceptedNames",
                                free(
                                    "acceptedNames are the names that are actually being used to serve discovery.",
                                ),
                            ),
                            (
                                "storedVersions",
                                atomic_list(
                                    "storedVersions lists all versions of CustomResources that were ever persisted.",
                                    json!({"type": "string"}),
                                ),
                            ),
                        ],
                    ),
                ),
            ],
        ),
        _ => top(
            &format!("{kind} (stored by the simulator without schema)."),
            vec![],
        )
        .pipe_preserve(),
    }
}

trait Preserve {
    fn pipe_preserve(self) -> Value;
}
impl Preserve for Value {
    fn pipe_preserve(mut self) -> Value {
        self["x-kubernetes-preserve-unknown-fields"] = json!(true);
        self
    }
}
