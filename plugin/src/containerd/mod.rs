//! containerd's own image API, for what the CRI cannot do: give a tag to an image that was
//! pulled by digest, and say what each image name points at.

use std::{collections::HashMap, future::Future, sync::Arc};

use containerd_client::services::v1::{
    events_client::EventsClient, images_client::ImagesClient, CreateImageRequest, GetImageRequest, Image,
    ListImagesRequest, UpdateImageRequest,
};
use tonic::{metadata::MetadataValue, transport::Channel, Code, Request, Status};

pub mod content;
mod events;
mod names;

use events::ImageEvents;
use names::NameCache;

/// A containerd namespace that cannot travel in gRPC metadata.
#[derive(Debug, thiserror::Error)]
#[error("containerd namespace {0:?} is not ASCII")]
pub struct NamespaceError(String);

/// The images service of one containerd namespace, with what its names point at remembered
/// while its image events are followed ([`Containerd::follow_image_events`]).
#[derive(Clone)]
pub struct Containerd {
    images: ImagesClient<Channel>,
    content: content::ContentStore,
    events: EventsClient<Channel>,
    namespace: MetadataValue<tonic::metadata::Ascii>,
    names: Arc<NameCache>,
}

impl Containerd {
    pub fn new(channel: Channel, namespace: &str) -> Result<Self, NamespaceError> {
        let content = content::ContentStore::new(channel.clone(), namespace)?;
        let namespace = MetadataValue::try_from(namespace).map_err(|_| NamespaceError(namespace.to_string()))?;
        Ok(Self {
            images: ImagesClient::new(channel.clone()),
            content,
            events: EventsClient::new(channel),
            namespace,
            names: Arc::default(),
        })
    }

    /// The content store and leases of the same namespace.
    pub fn content(&self) -> &content::ContentStore {
        &self.content
    }

    /// Follows containerd's image events for as long as it runs (spawn it once): until it has
    /// subscribed, and whenever the subscription is lost, [`Containerd::targets`] asks
    /// containerd every time.
    pub fn follow_image_events(&self) -> impl Future<Output = ()> + Send + 'static {
        ImageEvents::new(self.events.clone(), self.namespace.clone(), self.names.clone()).follow()
    }

    /// What each of `names` points at (a manifest or index digest), for the names containerd
    /// has. Names remembered are not asked again; the others are asked in one call.
    pub async fn targets(&self, names: &[&str]) -> Result<HashMap<String, String>, Status> {
        let mut found = HashMap::new();
        let mut missing = Vec::new();
        for &name in names {
            match self.names.get(name) {
                Some(digest) => {
                    found.insert(name.to_string(), digest);
                }
                None => missing.push(name),
            }
        }
        if missing.is_empty() {
            return Ok(found);
        }
        let ticket = self.names.ticket();
        // Filters are OR'ed: one call for every name.
        let filters = missing
            .iter()
            .map(|name| format!("name=={}", events::quoted(name)))
            .collect();
        let mut images = self.images.clone();
        let listed = images
            .list(self.request(ListImagesRequest { filters }))
            .await?
            .into_inner()
            .images;
        for image in listed {
            let Some(target) = image.target else { continue };
            if !missing.contains(&image.name.as_str()) {
                continue;
            }
            if let Some(ticket) = ticket {
                self.names.insert(ticket, &image.name, &target.digest);
            }
            found.insert(image.name, target.digest);
        }
        Ok(found)
    }

    /// The manifest (or index) digest containerd's image `name` points at; `None` when there is
    /// no such image. The CRI cannot tell: it answers by image id, the config's digest, which
    /// OCI artifacts with the same config (the empty one, say) share.
    pub async fn target_digest(&self, name: &str) -> Result<Option<String>, Status> {
        let mut images = self.images.clone();
        let found = images
            .get(self.request(GetImageRequest { name: name.to_string() }))
            .await;
        match found {
            Ok(reply) => Ok(reply.into_inner().image.and_then(|i| i.target).map(|t| t.digest)),
            Err(status) if status.code() == Code::NotFound => Ok(None),
            Err(status) => Err(status),
        }
    }

    /// Makes `name` refer to the same content (target and labels) as the image `existing`.
    ///
    /// The CRI plugin learns about the new name from containerd's image events; what `name`
    /// pointed at is forgotten here at once, not when pullgate's own event comes back.
    pub async fn tag(&self, existing: &str, name: &str) -> Result<(), Status> {
        let tagged = self.create_or_update(existing, name).await;
        // Even a failed update may have been applied.
        self.names.changed(name);
        tagged
    }

    async fn create_or_update(&self, existing: &str, name: &str) -> Result<(), Status> {
        let mut images = self.images.clone();
        let source = images
            .get(self.request(GetImageRequest {
                name: existing.to_string(),
            }))
            .await?
            .into_inner()
            .image
            .ok_or_else(|| Status::not_found(format!("containerd has no image {existing}")))?;
        let image = Image {
            name: name.to_string(),
            labels: source.labels,
            target: source.target,
            created_at: None,
            updated_at: None,
        };
        let created = images
            .create(self.request(CreateImageRequest {
                image: Some(image.clone()),
                source_date_epoch: None,
            }))
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(status) if status.code() == Code::AlreadyExists => {
                // No field mask: containerd replaces labels and target, so the tag moves.
                images
                    .update(self.request(UpdateImageRequest {
                        image: Some(image),
                        update_mask: None,
                        source_date_epoch: None,
                    }))
                    .await
                    .map(|_| ())
            }
            Err(status) => Err(status),
        }
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request
            .metadata_mut()
            .insert("containerd-namespace", self.namespace.clone());
        request
    }
}
